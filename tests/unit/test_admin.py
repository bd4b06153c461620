"""Tests for the admin HTTP server: each route over a real socket, then shutdown."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import anyio
import orjson
import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from esm.admin import AdminServer
from esm.metrics import Metrics
from esm.status_page import CONTENT_SECURITY_POLICY
from esm.status_view import mapping_rows

from ..html_table import read_page


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class _Flag:
    def __init__(self) -> None:
        self.value = False

    def __call__(self) -> bool:
        return self.value


class _State(enum.Enum):
    RUNNING = "running"


@dataclasses.dataclass
class _Shard:
    shard_id: str
    checkpoint: str


class _Opaque:
    def __str__(self) -> str:
        return "opaque-thing"


def _status() -> Mapping[str, Any]:
    return {
        "state": _State.RUNNING,
        "mappings": {
            "orders": {
                "shards": [_Shard("shardId-000000000000", "49590338271490256608559692538361")],
                "tags": frozenset({"b", "a"}),
                "backend": _Opaque(),
            }
        },
    }


@dataclasses.dataclass
class _Running:
    base: str
    http: aiohttp.ClientSession
    metrics: Metrics
    ready: _Flag


@pytest.fixture
async def admin() -> AsyncIterator[_Running]:
    metrics = Metrics()
    ready = _Flag()
    server = AdminServer(metrics.registry, ready=ready, status=_status)
    async with anyio.create_task_group() as tg, aiohttp.ClientSession() as http:
        port = await tg.start(server.serve, "127.0.0.1", 0)
        assert port > 0
        yield _Running(f"http://127.0.0.1:{port}", http, metrics, ready)
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_healthz_is_ok(admin: _Running) -> None:
    async with admin.http.get(f"{admin.base}/healthz") as response:
        assert response.status == 200
        assert await response.text() == "ok"


@pytest.mark.anyio
async def test_readyz_follows_the_ready_callable(admin: _Running) -> None:
    async with admin.http.get(f"{admin.base}/readyz") as response:
        assert response.status == 503
        assert await response.text() == "not ready"

    admin.ready.value = True

    async with admin.http.get(f"{admin.base}/readyz") as response:
        assert response.status == 200
        assert await response.text() == "ready"


@pytest.mark.anyio
async def test_metrics_exposes_the_registry(admin: _Running) -> None:
    admin.metrics.polled_events.labels(mapping="orders").inc(42)

    async with admin.http.get(f"{admin.base}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
        body = await response.text()
    assert 'esm_polled_events_total{mapping="orders"} 42.0' in body
    assert "# TYPE esm_invoke_duration_seconds histogram" in body


@pytest.mark.anyio
async def test_status_is_indented_json(admin: _Running) -> None:
    async with admin.http.get(f"{admin.base}/status") as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        raw = await response.read()

    assert raw.startswith(b'{\n  "state"')
    assert orjson.loads(raw) == {
        "state": "running",
        "mappings": {
            "orders": {
                "shards": [
                    {
                        "shard_id": "shardId-000000000000",
                        "checkpoint": "49590338271490256608559692538361",
                    }
                ],
                "tags": ["a", "b"],
                "backend": "opaque-thing",
            }
        },
    }


_QUEUE_STATUS = {
    "ready": True,
    "uptime_seconds": 12.5,
    "mappings": [
        {
            "name": "jobs",
            "function": "https://deploy:hunter2@functions.example/jobs",
            "event_source_arn": "arn:aws:sqs:us-east-1:123456789012:jobs",
            "ready": True,
            "paused": True,
            "pollers": {"running": 1, "target": 1},
            "batches_in_flight": 0,
            "last_error": "<ReceiveMessage> timed out",
        }
    ],
}


@pytest.mark.anyio
async def test_the_root_is_the_status_page() -> None:
    server = AdminServer(Metrics().registry, ready=lambda: True, status=lambda: _QUEUE_STATUS)
    async with anyio.create_task_group() as tg, aiohttp.ClientSession() as http:
        port = await tg.start(server.serve, "127.0.0.1", 0)
        async with http.get(f"http://127.0.0.1:{port}/") as response:
            assert response.status == 200
            assert (response.content_type, response.charset) == ("text/html", "utf-8")
            assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
            assert response.headers["Cache-Control"] == "no-store"
            html = await response.text()
        async with http.head(f"http://127.0.0.1:{port}/") as response:
            assert response.status == 200
        tg.cancel_scope.cancel()
    page = read_page(html)
    (row,) = page.texts()
    assert row[:4] == ["jobs", "sqs jobs", "https://deploy:***@functions.example/jobs", "paused"]
    assert row[-1] == "<ReceiveMessage> timed out"
    assert [r.cells()[4:-1] for r in mapping_rows(_QUEUE_STATUS)] == [row[4:-1]]
    # The function's URL is redacted, as in /status.
    assert "hunter2" not in html


@pytest.mark.anyio
async def test_a_failing_status_page_is_one_line_not_a_traceback() -> None:
    failing: Callable[[], Any] = _raises
    server = AdminServer(Metrics().registry, ready=lambda: True, status=failing)
    async with anyio.create_task_group() as tg, aiohttp.ClientSession() as http:
        port = await tg.start(server.serve, "127.0.0.1", 0)
        async with http.get(f"http://127.0.0.1:{port}/") as response:
            assert response.status == 500
            assert response.content_type == "text/html"
            html = await response.text()
        tg.cancel_scope.cancel()
    assert "Traceback" not in html
    assert read_page(html).by_tag["p"] == ["RuntimeError: state unavailable"]


@pytest.mark.anyio
async def test_unknown_route_is_404(admin: _Running) -> None:
    async with admin.http.get(f"{admin.base}/nope") as response:
        assert response.status == 404


def _raises() -> Any:
    raise RuntimeError("state unavailable")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("/readyz", 503, b"not ready"),
        ("/status", 500, b"RuntimeError: state unavailable"),
        ("/", 500, b"RuntimeError: state unavailable"),
    ],
)
async def test_failing_callables_answer_errors(path: str, status: int, body: bytes) -> None:
    failing: Callable[[], Any] = _raises
    server = AdminServer(Metrics().registry, ready=failing, status=failing)
    async with anyio.create_task_group() as tg, aiohttp.ClientSession() as http:
        port = await tg.start(server.serve, "127.0.0.1", 0)
        async with http.get(f"http://127.0.0.1:{port}{path}") as response:
            assert response.status == status
            assert body in await response.read()
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_cancellation_closes_the_port() -> None:
    server = AdminServer(Metrics().registry, ready=lambda: True, status=dict)
    async with anyio.create_task_group() as tg:
        port = await tg.start(server.serve, "127.0.0.1", 0)
        tg.cancel_scope.cancel()

    with pytest.raises(OSError, match="connection attempts failed"):
        await anyio.connect_tcp("127.0.0.1", port)


@pytest.mark.anyio
async def test_port_in_use_raises() -> None:
    server = AdminServer(Metrics().registry, ready=lambda: True, status=dict)
    async with anyio.create_task_group() as tg:
        port = await tg.start(server.serve, "127.0.0.1", 0)
        with pytest.raises(OSError, match="address already in use"):
            await server.serve("127.0.0.1", port)
        tg.cancel_scope.cancel()


async def _echo(mapping: str, arguments: Mapping[str, Any]) -> Mapping[str, Any]:
    if mapping == "gone":
        raise LookupError("no mapping gone")
    if arguments.get("to") == "nowhere":
        raise ValueError("--to nowhere: expected TRIM_HORIZON")
    if arguments.get("to") == "boom":
        raise RuntimeError("store down")
    return {"mapping": mapping, "arguments": dict(arguments)}


async def _reload(arguments: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"added": ["jobs"]}


@pytest.mark.anyio
async def test_write_operations_take_a_json_object_and_answer_each_error_in_one_line() -> None:
    server = AdminServer(
        Metrics().registry,
        ready=lambda: True,
        status=dict,
        operations={"seek": _echo},
        actions={"reload": _reload},
        token="t" * 16,
    )
    auth = {"Authorization": f"Bearer {'t' * 16}"}
    async with anyio.create_task_group() as tg, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{await tg.start(server.serve, '127.0.0.1', 0)}"
        cases: list[tuple[str, bytes, int, Any]] = [
            (
                "/mappings/m/seek",
                b'{"to": "LATEST"}',
                200,
                {"mapping": "m", "arguments": {"to": "LATEST"}},
            ),
            ("/mappings/m/seek", b"", 200, {"mapping": "m", "arguments": {}}),
            ("/mappings/m/seek", b"{not json", 400, {"error": "the request body is not JSON"}),
            ("/mappings/m/seek", b"[1]", 400, {"error": "the request body is not a JSON object"}),
            ("/mappings/gone/seek", b"{}", 404, {"error": "no mapping gone"}),
            (
                "/mappings/m/seek",
                b'{"to": "nowhere"}',
                400,
                {"error": "--to nowhere: expected TRIM_HORIZON"},
            ),
            ("/mappings/m/seek", b'{"to": "boom"}', 500, {"error": "RuntimeError: store down"}),
            ("/mappings/m/jump", b"{}", 404, {"error": "no operation 'jump'"}),
            ("/reload", b"", 200, {"added": ["jobs"]}),
        ]
        for path, body, status, answer in cases:
            async with http.post(f"{base}{path}", data=body, headers=auth) as response:
                assert (response.status, orjson.loads(await response.read())) == (status, answer)
        async with http.post(f"{base}/reload") as response:
            assert response.status == 401
        async with http.get(f"{base}/reload") as response:
            assert response.status == 405
        tg.cancel_scope.cancel()
