"""Data-subject-rights requests: the lifecycle, deadlines, fulfilment, erasure."""
