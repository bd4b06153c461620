"""Event sources: Kinesis Data Streams (and, sharing its shard machinery, DynamoDB Streams)."""
