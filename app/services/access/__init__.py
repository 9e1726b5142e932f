"""Who may call: API keys, auditor page sessions, the hashing key's fingerprint."""
