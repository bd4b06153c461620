"""`esm demo`: a Kinesis stream and an SQS queue processed end to end on an embedded AWS
emulator, offline."""

from __future__ import annotations

import logging
import os
import random
import socket
import sys
import time
from typing import Any

import anyio
import orjson
from aiobotocore.session import get_session

from esm.config import parse_config
from esm.daemon import Daemon
from esm.engine.streams import StreamEngine
from esm.log import configure_logging

STREAM = "esm-demo-orders"
QUEUE = "esm-demo-payments"
_DEMO_CONFIG = """
aws:
  region: us-east-1
  endpoint_url: {endpoint}
state:
  backend: memory
admin:
  listen: 127.0.0.1:0
log:
  format: console
  level: warning
polling:
  interval_seconds: 0.2
  shard_discovery_interval_seconds: 1
functions:
  demo:
    type: python
    handler: esm.examples.handlers:handle
    timeout: 10
mappings:
  - FunctionName: demo
    EventSourceArn: {stream_arn}
    StartingPosition: TRIM_HORIZON
    BatchSize: {batch_size}
  - FunctionName: demo
    EventSourceArn: {queue_arn}
    BatchSize: 10
sqs:
  # The emulator answers one request at a time (see serial_emulator): a long poll would
  # hold up the stream's reads.
  wait_time_seconds: 0
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serial_emulator(host: str, port: int) -> Any:
    """The embedded AWS emulator (moto's server), answering one request at a time.

    moto's backends are not safe under concurrent requests: two ReceiveMessage calls can
    take the same SQS message, which real SQS never does, and the demo would then count a
    message deleted twice. Serving requests one by one makes the emulator behave like the
    service. Raises ImportError when the `demo` extra is not installed.
    """
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    class SerialMotoServer(ThreadedMotoServer):
        def _server_entry(self) -> None:
            app = DomainDispatcherApplication(create_backend_app)
            self._server = make_server(
                host, port, app, threaded=False, request_handler=MotoRequestHandler
            )
            self._server_ready_event.set()
            self._server.serve_forever()

    return SerialMotoServer(ip_address=host, port=port, verbose=False)


def run_demo(
    *, records: int = 300, shards: int = 2, batch_size: int = 50, messages: int = 100
) -> int:
    """Start the emulator, write `records` records and send `messages` messages, process
    them, print a summary."""
    port = _free_port()
    try:
        server = serial_emulator("127.0.0.1", port)
    except ImportError:
        print(
            "esm demo needs the embedded AWS emulator: pip install 'esm[demo]'",
            file=sys.stderr,
        )
        return 1
    # The emulator accepts any credentials; real ones are never needed or sent anywhere.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "demo")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "demo")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        return anyio.run(_demo, endpoint, records, shards, batch_size, messages)
    finally:
        server.stop()


async def _create_stream(endpoint: str, shards: int, records: int) -> str:
    session = get_session()
    async with session.create_client(
        "kinesis", region_name="us-east-1", endpoint_url=endpoint
    ) as kinesis:
        await kinesis.create_stream(StreamName=STREAM, ShardCount=shards)
        summary = await kinesis.describe_stream_summary(StreamName=STREAM)
        arn = str(summary["StreamDescriptionSummary"]["StreamARN"])
        rng = random.Random(7)
        for start in range(0, records, 500):
            entries = [
                {
                    "Data": orjson.dumps(
                        {
                            "order_id": n,
                            "customer": f"customer-{rng.randint(1, 20)}",
                            "amount": round(rng.uniform(5, 500), 2),
                        }
                    ),
                    "PartitionKey": f"customer-{n % 20}",
                }
                for n in range(start, min(records, start + 500))
            ]
            await kinesis.put_records(StreamName=STREAM, Records=entries)
        return arn


async def _create_queue(endpoint: str, messages: int) -> str:
    session = get_session()
    async with session.create_client("sqs", region_name="us-east-1", endpoint_url=endpoint) as sqs:
        url = (await sqs.create_queue(QueueName=QUEUE))["QueueUrl"]
        attributes = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        for start in range(0, messages, 10):
            entries = [
                {"Id": str(n), "MessageBody": orjson.dumps({"payment_id": n}).decode()}
                for n in range(start, min(messages, start + 10))
            ]
            await sqs.send_message_batch(QueueUrl=url, Entries=entries)
        return str(attributes["Attributes"]["QueueArn"])


def _deleted(daemon: Daemon) -> int:
    queue_mapping = daemon.config.mappings[1].mapping_name
    return int(daemon.metrics.deleted_events.labels(queue_mapping)._value.get())


def _stream_runners(daemon: Daemon) -> list[StreamEngine]:
    return [r for r in daemon.runners.values() if isinstance(r, StreamEngine)]


def _delivered(daemon: Daemon) -> tuple[int, int]:
    records = batches = 0
    for runner in _stream_runners(daemon):
        for shard in runner.shards.values():
            records += shard.records_delivered
            batches += shard.batches_delivered
    return records, batches


async def _demo(endpoint: str, records: int, shards: int, batch_size: int, messages: int) -> int:
    print(f"esm demo: embedded AWS emulator on {endpoint}")
    arn = await _create_stream(endpoint, shards, records)
    print(f"  wrote {records} records to {arn} ({shards} shards)")
    queue_arn = await _create_queue(endpoint, messages)
    print(f"  sent {messages} messages to {queue_arn}")
    text = _DEMO_CONFIG.format(
        endpoint=endpoint, stream_arn=arn, queue_arn=queue_arn, batch_size=batch_size
    )
    config = parse_config(text, source="<demo>")
    configure_logging(config.log.format, config.log.level)
    daemon = Daemon(config)
    started = time.monotonic()
    delivered = deleted = 0
    async with anyio.create_task_group() as tg:
        await tg.start(
            lambda task_status: daemon.run(handle_signals=False, task_status=task_status)
        )
        print(
            "  function 'demo' (esm.examples.handlers:handle) reads both; "
            f"status: http://127.0.0.1:{daemon.admin_port}/status"
        )
        with anyio.move_on_after(60) as timeout:
            while delivered < records or deleted < messages:
                await anyio.sleep(0.25)
                delivered, batches = _delivered(daemon)
                deleted = _deleted(daemon)
                print(
                    f"  stream: {delivered:>6}/{records} records in {batches} batches   "
                    f"queue: {deleted:>5}/{messages} messages processed and deleted"
                )
        daemon.request_stop()
    elapsed = time.monotonic() - started
    delivered, batches = _delivered(daemon)
    deleted = _deleted(daemon)
    print()
    print("summary")
    print(f"  records written    {records}")
    print(f"  records delivered  {delivered}")
    print(f"  batches invoked    {batches}")
    for runner in _stream_runners(daemon):
        for shard_id, shard in sorted(runner.shards.items()):
            print(
                f"  checkpoint {shard_id}: {shard.checkpoint} ({shard.records_delivered} records)"
            )
    print(f"  messages sent      {messages}")
    print(f"  messages deleted   {deleted}")
    print(f"  elapsed            {elapsed:.2f} s")
    if timeout.cancelled_caught or delivered < records or deleted < messages:
        print("demo did not finish: not everything was delivered in 60 s", file=sys.stderr)
        return 1
    return 0
