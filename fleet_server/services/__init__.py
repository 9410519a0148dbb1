"""Business logic with keyword-only arguments; routes and the ingest thread call these."""
