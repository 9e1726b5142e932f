"""The person's own door: signed links and what the pages do."""
