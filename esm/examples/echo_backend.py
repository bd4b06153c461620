"""An example backend plugin: answers each batch at once, optionally failing some records.

It is registered in esm's own package metadata under the entry-point group `esm.backends` as
`example-echo`, so `type: example-echo` works out of the box and shows the whole plugin
contract (docs/plugins.md): a factory taking the function's name, options, timeout and memory
size, returning an object with `invoke` and `aclose`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from esm.errors import BackendError
from esm.model import Invocation, InvokeResult, ResultKind


class EchoBackend:
    """Succeeds on every batch; reports as failed the records whose data or body contains
    `fail_marker`, so partial batch responses can be tried without writing a function."""

    def __init__(self, name: str, *, fail_marker: str | None) -> None:
        self.name = name
        self.fail_marker = fail_marker
        self.invocations = 0

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        started = time.monotonic()
        self.invocations += 1
        failures = []
        if self.fail_marker is not None:
            marker = self.fail_marker.encode()
            for record in orjson.loads(invocation.payload).get("Records", []):
                if marker in orjson.dumps(record):
                    identifier = (
                        record.get("messageId")
                        or record.get("kinesis", {}).get("sequenceNumber")
                        or record.get("dynamodb", {}).get("SequenceNumber")
                    )
                    failures.append({"itemIdentifier": identifier})
        return InvokeResult(
            kind=ResultKind.SUCCESS,
            response={"batchItemFailures": failures},
            duration=time.monotonic() - started,
        )

    async def aclose(self) -> None:
        return None


def create(
    name: str, options: Mapping[str, Any], *, timeout: float, memory_size: int
) -> EchoBackend:
    """The entry point: build the backend from the function's `options`."""
    unknown = set(options) - {"fail_marker"}
    if unknown:
        raise BackendError(
            f"function {name}: unknown options {sorted(unknown)}; known: fail_marker"
        )
    marker = options.get("fail_marker")
    if marker is not None and not isinstance(marker, str):
        raise BackendError(f"function {name}: fail_marker must be a string")
    return EchoBackend(name, fail_marker=marker)
