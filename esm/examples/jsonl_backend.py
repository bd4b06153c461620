"""An example function backend in one module: it appends each batch's event to a JSON Lines
file. docs/adding-a-backend.md shows this module whole; esm registers it, as another package
would, under the entry-point group esm.backends as `example-jsonl`.

A backend is three things: its settings (a pydantic model on `FunctionSettings`, with a
`type` literal and ranges in `Field`), a class with `invoke` and `aclose`, and an async
factory building the second from the first. `plugin` ties them to the type name.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import anyio
from pydantic import Field

from esm.model import Invocation, InvokeResult, ResultKind
from esm.registry import BackendContext, BackendFactory, Plugin
from esm.settings import FunctionSettings


class JsonLinesSettings(FunctionSettings):
    """Each batch's event appended, as one line, to a file."""

    type: Literal["example-jsonl"]
    path: str = Field(description="The file the events are appended to (created if missing).")
    max_line_bytes: int = Field(
        1_048_576,
        ge=1024,
        le=6_291_456,
        description="A batch whose event is larger is a function error (Lambda's payload "
        "limit is 6 MB).",
    )

    def target(self) -> str:
        # What `esm validate` prints after the type.
        return self.path


class JsonLinesBackend:
    """Appends each invocation's payload to a file; one line per batch."""

    def __init__(self, path: str, max_line_bytes: int) -> None:
        self.path = Path(path)
        self.max_line_bytes = max_line_bytes
        self._lock = anyio.Lock()  # batches of several mappings may arrive at once

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        started = time.monotonic()
        if len(invocation.payload) > self.max_line_bytes:
            return InvokeResult(
                kind=ResultKind.FUNCTION_ERROR,
                error=f"event of {len(invocation.payload)} bytes over max_line_bytes",
                duration=time.monotonic() - started,
            )
        async with self._lock:
            await anyio.to_thread.run_sync(self._append, invocation.payload)
        return InvokeResult(kind=ResultKind.SUCCESS, duration=time.monotonic() - started)

    def _append(self, payload: bytes) -> None:
        with self.path.open("ab") as file:
            file.write(payload + b"\n")

    async def aclose(self) -> None:
        return None


async def create(context: BackendContext, settings: JsonLinesSettings) -> JsonLinesBackend:
    """Called once per function of this type, before esm starts delivering."""
    return JsonLinesBackend(settings.path, settings.max_line_bytes)


plugin: Plugin[BackendFactory] = Plugin(
    "example-jsonl",
    JsonLinesSettings,
    create,
    "each batch's event appended to a JSON Lines file (an example)",
)
