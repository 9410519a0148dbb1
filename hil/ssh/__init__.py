"""Real boards over SSH: ``edgefleet hil run --target ssh://USER@HOST`` (see docs/hil.md)."""
