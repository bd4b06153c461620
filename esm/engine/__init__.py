"""The engine every source runs through: what happens to a batch and when."""
