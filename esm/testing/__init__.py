"""Test doubles that ship with esm: stateful fakes of the AWS clients and of a function.

They model behaviour (shards, iterators, lineage, visibility, failures to inject) rather than
replay canned answers, so tests of the pipeline exercise the same code paths as production.
One module per source; everything a test needs is importable from `esm.testing`.
"""

from esm.testing._common import (
    FakeClientError,
    RecordingBackend,
    Script,
    function_error,
    kinesis_data,
    throttle,
)
from esm.testing.dynamodb_streams import TTL_IDENTITY, FakeDynamoDBStreamsClient
from esm.testing.kinesis import FakeEventStream, FakeKinesisClient, FakeKinesisFanOutClient
from esm.testing.queue import FakeQueueReader
from esm.testing.sqs import FakeSqsClient
from esm.testing.streams import FakeStream

__all__ = [
    "TTL_IDENTITY",
    "FakeClientError",
    "FakeDynamoDBStreamsClient",
    "FakeEventStream",
    "FakeKinesisClient",
    "FakeKinesisFanOutClient",
    "FakeQueueReader",
    "FakeSqsClient",
    "FakeStream",
    "RecordingBackend",
    "Script",
    "function_error",
    "kinesis_data",
    "throttle",
]
