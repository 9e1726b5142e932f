"""The audit log: appending entries, the sealer and checkpoints, listing, verify."""
