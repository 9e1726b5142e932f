"""The change feed: appending entries and the sequencer that numbers them."""
