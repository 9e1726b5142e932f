"""The consent ledger: events, current state, receipts, proofs, re-consent."""
