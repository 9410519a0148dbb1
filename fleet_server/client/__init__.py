"""The operator client: ``edgefleet fleet`` and :class:`~fleet_server.client.api.FleetClient`.

Importing this package imports nothing heavy; httpx and rich load with the command that uses them.
"""
