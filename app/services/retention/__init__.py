"""Retention (§7): the rules per category, what is due, and the sweep that erases it."""
