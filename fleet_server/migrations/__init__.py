"""Alembic migrations of the fleet server schema (applied at startup by fleet_server.db)."""
