"""Marketing opt-outs (by e-mail hash) and objections (Art 21)."""
