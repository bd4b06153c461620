"""Leases: several esm processes sharing the shards of a stream through a DynamoDB table."""
