"""Traces end to end, a daemon against moto: the span of each batch, the traceparent an HTTP
function receives, links from SQS messages' trace headers, a collector that is down, and
tracing off."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import structlog
from aiohttp import web
from opentelemetry import trace

from esm.backends.python import PythonBackend
from esm.config import EsmConfig, parse_config
from esm.daemon import Daemon
from esm.protocols import FunctionBackend
from esm.tracing import NO_TRACING, Tracing

from ..conftest import free_port
from ..spans import RecordedSpans, traceparent_of
from .helpers import create_stream, put_records

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

XRAY = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@asynccontextmanager
async def http_function() -> AsyncIterator[tuple[str, list[web.Request], list[Any]]]:
    """A function served over HTTP that keeps each request and its event."""
    requests: list[web.Request] = []
    events: list[Any] = []

    async def handle(request: web.Request) -> web.Response:
        events.append(await request.json())
        requests.append(request)
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/", requests, events
    finally:
        await runner.cleanup()


def _config(endpoint: str, source_arn: str, function: str, extra: str = "") -> EsmConfig:
    if ":kinesis:" in source_arn:
        mapping = "StartingPosition: TRIM_HORIZON"
    else:
        # Both messages of a test in one batch, most likely; the test does not rely on it.
        mapping = "BatchSize: 10\n    MaximumBatchingWindowInSeconds: 1"
    return parse_config(
        f"""
aws: {{region: us-east-1, endpoint_url: "{endpoint}"}}
state: {{backend: memory}}
admin: {{enabled: false}}
polling: {{interval_seconds: 0.2}}
sqs: {{wait_time_seconds: 0}}
delivery: {{backoff_initial_seconds: 0.05, backoff_max_seconds: 0.2}}
{extra}
functions:
  fn: {function}
mappings:
  - FunctionName: fn
    EventSourceArn: {source_arn}
    {mapping}
""",
        environ={},
    )


async def _run_until(
    config: EsmConfig,
    done: Callable[[], bool],
    *,
    tracing: Tracing | None = None,
    backends: dict[str, FunctionBackend] | None = None,
) -> Daemon:
    daemon = Daemon(config, tracing=tracing, backends=backends)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(
                lambda task_status: daemon.run(handle_signals=False, task_status=task_status)
            )
            while not done():
                await anyio.sleep(0.02)
            daemon.request_stop()
    return daemon


async def test_an_http_function_receives_the_traceparent_of_its_batch_span(
    kinesis: Any, moto_endpoint: str, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    await put_records(kinesis, stream_name, 5)
    recorded = RecordedSpans()
    async with http_function() as (url, requests, events):
        config = _config(moto_endpoint, arn, f'{{type: http, url: "{url}"}}')

        def delivered() -> bool:
            return sum(len(e["Records"]) for e in events) >= 5 and len(recorded.batches()) >= 1

        await _run_until(config, delivered, tracing=recorded.tracing)
    batch = recorded.batches()[0]
    attributes = batch.attributes or {}
    assert attributes["esm.mapping"] == config.mappings[0].mapping_name
    assert attributes["esm.shard_id"] == "shardId-000000000000"
    assert attributes["esm.event_source_arn"] == arn
    assert attributes["messaging.batch.message_count"] == len(events[0]["Records"])
    assert attributes["esm.result"] == "success"
    [attempt] = recorded.attempts(batch)
    assert requests[0].headers["traceparent"] == traceparent_of(attempt)
    # The span context is sent as itself, not as one of esm's X-Esm-* labels.
    assert "X-Esm-Traceparent" not in requests[0].headers


async def test_sqs_trace_headers_become_links_and_the_event_keeps_its_shape(
    sqs: Any, moto_endpoint: str
) -> None:
    name = f"q-{uuid.uuid4().hex[:12]}"
    url = (await sqs.create_queue(QueueName=name))["QueueUrl"]
    arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))["Attributes"][
        "QueueArn"
    ]
    await sqs.send_message(
        QueueUrl=url,
        MessageBody="from x-ray",
        MessageSystemAttributes={"AWSTraceHeader": {"DataType": "String", "StringValue": XRAY}},
    )
    await sqs.send_message(
        QueueUrl=url,
        MessageBody="from w3c",
        MessageAttributes={"traceparent": {"DataType": "String", "StringValue": TRACEPARENT}},
    )
    recorded = RecordedSpans()
    seen: list[tuple[dict[str, Any], str | None]] = []

    def handler(event: dict[str, Any], context: Any) -> None:
        seen.extend((record, context.traceparent) for record in event["Records"])

    backend = PythonBackend(handler, timeout=30, function_name="fn")
    config = _config(moto_endpoint, arn, "{type: python, handler: 'esm.examples.handlers:handle'}")

    def settled() -> bool:
        counts = [
            b.attributes["messaging.batch.message_count"]
            for b in recorded.batches()
            if b.attributes
        ]
        return sum(int(str(c)) for c in counts) >= 2

    await _run_until(config, settled, tracing=recorded.tracing, backends={"fn": backend})
    by_body = {record["body"]: record for record, _ in seen}
    # What the function sees is Lambda's event: the system attribute is one of its attributes.
    assert by_body["from x-ray"]["attributes"]["AWSTraceHeader"] == XRAY
    assert by_body["from w3c"]["messageAttributes"]["traceparent"]["stringValue"] == TRACEPARENT
    assert "AWSTraceHeader" not in by_body["from w3c"]["attributes"]

    links = {
        (link.context.trace_id, link.context.span_id, link.context.is_remote)
        for batch in recorded.batches()
        for link in batch.links
    }
    assert links == {
        (0x5759E988BD862E3FE1BE46A994272793, 0x53995C3F42CD8AD8, True),
        (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True),
    }
    batch = recorded.batches()[0]
    attributes = batch.attributes or {}
    assert (attributes["esm.queue"], attributes["esm.result"]) == (name, "success")
    # The handler saw its invocation's context.
    attempts = recorded.attempts()
    assert {traceparent for _, traceparent in seen} <= {traceparent_of(a) for a in attempts}
    assert all(traceparent is not None for _, traceparent in seen)


@pytest.fixture
def no_global_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "set_tracer_provider", lambda provider: None)


@pytest.mark.usefixtures("no_global_provider")
async def test_a_collector_that_is_down_costs_no_batch_and_no_traceback(
    kinesis: Any,
    moto_endpoint: str,
    stream_name: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Each export gives up after a second; the daemon's flush at exit waits at most five.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    caplog.set_level(logging.WARNING)
    arn = await create_stream(kinesis, stream_name, 1)
    await put_records(kinesis, stream_name, 5)
    async with http_function() as (url, requests, events):
        closed = f"http://127.0.0.1:{free_port()}"
        config = _config(
            moto_endpoint,
            arn,
            f'{{type: http, url: "{url}"}}',
            extra=f"tracing: {{enabled: true, endpoint: '{closed}'}}",
        )

        def delivered() -> bool:
            return sum(len(e["Records"]) for e in events) >= 5

        with structlog.testing.capture_logs() as logs:
            daemon = await _run_until(config, delivered)
    assert daemon.tracing is not NO_TRACING
    assert "traceparent" in requests[0].headers
    failed = [line for line in logs if line["event"].startswith("exporting spans failed")]
    assert len(failed) == 1, "logged once, when the failures start"
    assert not [r for r in caplog.records if r.exc_info], "no traceback is logged"


async def test_tracing_off_sends_no_trace_context(
    kinesis: Any, moto_endpoint: str, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    await put_records(kinesis, stream_name, 3)
    async with http_function() as (url, requests, events):
        config = _config(moto_endpoint, arn, f'{{type: http, url: "{url}"}}')
        daemon = await _run_until(config, lambda: sum(len(e["Records"]) for e in events) >= 3)
    assert daemon.tracing is NO_TRACING
    assert all("traceparent" not in r.headers for r in requests)
