"""`esm redrive`: failure records read back from an on-failure destination, their records
fetched from the stream again (or taken from the S3 object), and the mapping's function
invoked with them; each failure record is deleted once its batch succeeds."""
