"""Pure pipeline logic: batching, retry decisions and delivery, with no I/O of its own."""
