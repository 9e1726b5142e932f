"""The decision gate: the one SQL predicate, single decisions, batches, audiences."""
