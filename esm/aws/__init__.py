"""The AWS edge: typed clients of the calls esm makes, and one error translator."""
