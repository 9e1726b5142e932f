"""Auditor reports: the overview page and the record of processing (Art 30)."""
