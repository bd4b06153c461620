"""Function backends: where a batch goes to be processed (HTTP endpoint, Python handler)."""
