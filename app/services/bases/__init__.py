"""Lawful bases per subject and purpose, with their history."""
