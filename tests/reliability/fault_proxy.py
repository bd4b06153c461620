"""An HTTP proxy between esm and the AWS emulator that injects faults.

esm is pointed at the proxy (`aws.endpoint_url`); the proxy forwards each request to the
emulator and, as its `FaultSchedule` decides, answers in its place or mangles the exchange:

- ``reset``: the connection is reset (RST) before the request reaches the emulator;
- ``reset_after``: the emulator carries the request out, then the connection is reset, so the
  client never learns that it succeeded;
- ``http_500`` / ``http_503``: an InternalFailure / ServiceUnavailable answer;
- ``throttle``: the service's throttling answer (Kinesis
  ``ProvisionedThroughputExceededException`` with HTTP 400; SQS ``RequestThrottled``);
- ``delay``: the request is forwarded after a pause shorter than the client's read timeout;
- ``stall``: no answer for longer than the client's read timeout, then the connection drops
  (half of the stalls forward the request first, so the work is done but never confirmed).

The schedule is seeded: the same seed gives the same sequence of decisions for the same
sequence of requests. Requests are told apart by service and operation (``X-Amz-Target`` for
the JSON protocols, ``Action`` for the query protocol).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import aiohttp
import orjson
from aiohttp import web

FAULT_KINDS = ("reset", "reset_after", "http_500", "http_503", "throttle", "delay", "stall")

# Headers that describe one hop of the exchange, not the message: never forwarded.
_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "host",
        "content-length",
        "content-encoding",
        "accept-encoding",
    }
)


@dataclass(frozen=True)
class Fault:
    kind: str
    seconds: float = 0.0
    """How long a ``delay`` or a ``stall`` lasts."""
    forward: bool = False
    """A ``stall`` that first lets the emulator carry the request out."""


@dataclass
class _Forced:
    fault: Fault
    remaining: int
    operations: frozenset[str] | None


@dataclass
class FaultSchedule:
    """Which fault, if any, each request gets: seeded, and switchable between phases.

    `rate` is the share of requests that get a fault, drawn from `kinds` with `weights`.
    `force()` queues faults for the next matching requests whatever the rate (a stall of the
    next GetRecords, say). `counts` tells what was injected, by kind and by operation.
    """

    seed: int
    rate: float = 0.0
    kinds: tuple[str, ...] = ("reset", "reset_after", "http_500", "http_503", "throttle", "delay")
    weights: tuple[float, ...] | None = None
    delay_seconds: tuple[float, float] = (0.1, 1.5)
    stall_seconds: float = 35.0
    """Longer than the client's read timeout (esm's AWS clients use 30 s)."""
    counts: Counter[str] = field(default_factory=Counter)
    by_operation: Counter[tuple[str, str]] = field(default_factory=Counter)
    requests: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._forced: list[_Forced] = []
        for kind in self.kinds:
            if kind not in FAULT_KINDS:
                raise ValueError(f"unknown fault kind {kind!r}: one of {', '.join(FAULT_KINDS)}")

    def set(self, rate: float, kinds: tuple[str, ...] | None = None) -> None:
        """Switch phase: from now on `rate` of the requests get one of `kinds`."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate is a share between 0 and 1")
        self.rate = rate
        if kinds is not None:
            for kind in kinds:
                if kind not in FAULT_KINDS:
                    raise ValueError(f"unknown fault kind {kind!r}")
            self.kinds = kinds
            self.weights = None

    def force(
        self, fault: Fault, *, count: int = 1, operations: tuple[str, ...] | None = None
    ) -> None:
        """Give `fault` to the next `count` requests (of `operations`, if given)."""
        self._forced.append(
            _Forced(fault, count, frozenset(operations) if operations is not None else None)
        )

    def forced_pending(self) -> int:
        return sum(f.remaining for f in self._forced)

    def decide(self, service: str, operation: str) -> Fault | None:
        self.requests += 1
        fault = self._take_forced(operation)
        if fault is None:
            # Always draw, so that the decisions depend on the request count alone.
            draw = self._rng.random()
            kind = self._rng.choices(self.kinds, weights=self.weights)[0]
            lo, hi = self.delay_seconds
            seconds = self._rng.uniform(lo, hi)
            forward = self._rng.random() < 0.5
            if draw >= self.rate:
                return None
            if kind == "stall":
                seconds = self.stall_seconds
            fault = Fault(kind, seconds if kind in ("delay", "stall") else 0.0, forward)
        self.counts[fault.kind] += 1
        self.by_operation[(fault.kind, f"{service}.{operation}")] += 1
        return fault

    def _take_forced(self, operation: str) -> Fault | None:
        for forced in self._forced:
            if forced.operations is None or operation in forced.operations:
                forced.remaining -= 1
                if forced.remaining <= 0:
                    self._forced.remove(forced)
                return forced.fault
        return None


def _operation(headers: Mapping[str, str], body: bytes) -> tuple[str, str]:
    """(service, operation) of an AWS request."""
    target = headers.get("X-Amz-Target")
    if target:
        prefix, _, operation = target.partition(".")
        if prefix.startswith("Kinesis"):
            return "kinesis", operation
        if prefix.startswith("AmazonSQS"):
            return "sqs", operation
        if prefix.startswith("DynamoDBStreams"):
            return "dynamodbstreams", operation
        if prefix.startswith("DynamoDB"):
            return "dynamodb", operation
        return prefix, operation
    if body:
        action = parse_qs(body.decode("utf-8", "replace")).get("Action")
        if action:
            return "query", action[0]
    return "unknown", "unknown"


def _error(service: str, status: int, code: str, message: str, json_protocol: bool) -> web.Response:
    if not json_protocol:
        body = (
            "<ErrorResponse><Error><Type>Sender</Type>"
            f"<Code>{code}</Code><Message>{message}</Message></Error>"
            "<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
        ).encode()
        return web.Response(status=status, body=body, content_type="text/xml")
    headers = {"x-amzn-RequestId": "00000000-0000-0000-0000-000000000000"}
    type_name = code
    if service == "sqs":
        # SQS's JSON protocol names errors in its namespace and repeats the query-protocol
        # code in a header, which botocore prefers.
        type_name = f"com.amazonaws.sqs#{code}"
        fault = "Receiver" if status >= 500 else "Sender"
        headers["x-amzn-query-error"] = f"{code};{fault}"
    content_type = (
        "application/x-amz-json-1.0" if service == "sqs" else "application/x-amz-json-1.1"
    )
    return web.Response(
        status=status,
        body=orjson.dumps({"__type": type_name, "message": message}),
        headers=headers,
        content_type=content_type,
    )


def _throttle(service: str, json_protocol: bool) -> web.Response:
    if service == "kinesis":
        return _error(
            service,
            400,
            "ProvisionedThroughputExceededException",
            "Rate exceeded for shard shardId-000000000000 in stream under account 000000000000.",
            json_protocol,
        )
    if service == "sqs":
        return _error(service, 400, "RequestThrottled", "Request is throttled.", json_protocol)
    return _error(service, 400, "ThrottlingException", "Rate exceeded", json_protocol)


class FaultProxy:
    """The proxy: `async with FaultProxy(upstream, schedule) as proxy:` serves `proxy.url`."""

    def __init__(self, upstream: str, schedule: FaultSchedule, *, port: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.schedule = schedule
        self._port = port
        self.url = ""
        self.forwarded = 0
        self.enabled = True
        self._released = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> FaultProxy:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=120), auto_decompress=True
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Stalled requests end now rather than at their deadline.
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        service, operation = _operation(request.headers, body)
        json_protocol = "X-Amz-Target" in request.headers
        fault = self.schedule.decide(service, operation) if self.enabled else None
        if fault is None:
            return await self._forward(request, body)
        if fault.kind == "reset":
            return self._reset(request)
        if fault.kind == "reset_after":
            await self._forward(request, body)
            return self._reset(request)
        if fault.kind == "http_500":
            return _error(service, 500, "InternalFailure", "injected failure", json_protocol)
        if fault.kind == "http_503":
            return _error(service, 503, "ServiceUnavailable", "injected outage", json_protocol)
        if fault.kind == "throttle":
            return _throttle(service, json_protocol)
        if fault.kind == "delay":
            await asyncio.sleep(fault.seconds)
            return await self._forward(request, body)
        # stall
        if fault.forward:
            await self._forward(request, body)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._released.wait(), fault.seconds)
        return self._reset(request)

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as answer:
            payload = await answer.read()
            out_headers = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_HEADERS}
        self.forwarded += 1
        return web.Response(status=answer.status, body=payload, headers=out_headers)

    @staticmethod
    def _reset(request: web.Request) -> web.Response:
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # Linger 0: closing sends RST rather than FIN, as a crashed peer would.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        return web.Response(status=599)
