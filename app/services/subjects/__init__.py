"""The people the service holds: create, read, update, list (one write path each)."""
