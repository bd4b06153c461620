"""The admin HTTP server: /metrics for Prometheus, /healthz and /readyz probes, /status, and
the status page at /."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.abc
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from esm.errors import describe
from esm.log import get_logger
from esm.redact import redact
from esm.status_page import CONTENT_SECURITY_POLICY, render_error_page, render_page

# Seconds a scrape in progress may take to finish once the server is asked to stop.
_SHUTDOWN_GRACE_SECONDS = 2.0

_log = get_logger(component="admin")


def _to_json(value: object) -> object:
    """orjson's fallback for types it does not know: mappings, sets, then str()."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)


def _render_status(status: Mapping[str, Any]) -> bytes:
    text = orjson.dumps(
        status,
        default=_to_json,
        option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE,
    ).decode()
    # Over the rendered page, so that no URL escapes, wherever it sits (an error text, a key,
    # an object's str()); redaction never spans a quote, so the JSON stays valid.
    return redact(text).encode()


class AdminServer:
    """Serves the daemon's metrics, probes and status over HTTP.

    - `GET /metrics`: every metric of `metrics_registry` in Prometheus' text format.
    - `GET /healthz`: 200 `ok` as long as the process serves requests (liveness).
    - `GET /readyz`: 200 `ready` when `ready()` is true, else 503 `not ready` (readiness).
    - `GET /status`: `status()` as indented JSON.
    - `GET /`: the status page, `status()` as `esm status`'s table in HTML, read-only.
    - `POST /mappings/{mapping}/{operation}`: one of `operations` (pause, resume, seek) on
      a mapping, by name or id, with the request's JSON object as its arguments.
    - `POST /{action}`: one of `actions` (reload), on esm as a whole.

    Write operations need `token` as a bearer token: with no token configured they are
    refused (403), with a wrong or missing one 401. An operation's LookupError is a 404, its
    ValueError (arguments that cannot be done) a 400, anything else a 500 in one line.

    `ready` and `status` are called on every request, from the event loop: keep them quick
    and non-blocking.
    """

    def __init__(
        self,
        metrics_registry: CollectorRegistry,
        *,
        ready: Callable[[], bool],
        status: Callable[[], Mapping[str, Any]],
        operations: Mapping[str, Operation] | None = None,
        actions: Mapping[str, Action] | None = None,
        token: str | None = None,
    ) -> None:
        self._registry = metrics_registry
        self._ready = ready
        self._status = status
        self._operations = dict(operations or {})
        self._actions = dict(actions or {})
        self._token = token

    def create_app(self) -> web.Application:
        """The aiohttp application with its routes (also handy for testing)."""
        app = web.Application()
        app.router.add_get("/", self._status_page)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/status", self._status_json)
        app.router.add_post("/mappings/{mapping}/{operation}", self._operate)
        for action in self._actions:
            # One route per action: a catch-all would answer 405 to a GET of any unknown path.
            app.router.add_post(f"/{action}", self._act)
        return app

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on `host`:`port` until cancelled; port 0 picks a free port.

        Reports the bound port through `task_status` once connections are accepted, so
        `port = await tg.start(server.serve, host, 0)` gives a server ready to be called.

        :raises OSError: the address cannot be bound (in use, not local, no permission).
        """
        # access_log=None: a line per scrape or probe would drown the daemon's own logs.
        runner = web.AppRunner(
            self.create_app(),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=_SHUTDOWN_GRACE_SECONDS,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            bound = runner.addresses[0][1]
            _log.debug("admin server listening", host=host, port=bound)
            task_status.started(bound)
            await anyio.sleep_forever()
        finally:
            # Shielded: cancellation is how this server is stopped, and the listening socket
            # must still be closed; bounded so a stuck connection cannot stall shutdown.
            with anyio.move_on_after(_SHUTDOWN_GRACE_SECONDS + 1, shield=True):
                await runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        # Set as a header: aiohttp refuses a charset inside `content_type=`.
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _readyz(self, request: web.Request) -> web.Response:
        try:
            ready = self._ready()
        except Exception as exc:  # noqa: BLE001 - containment: a probe answers, whatever broke
            _log.error("readiness check failed", error=describe(exc))
            ready = False
        if ready:
            return web.Response(text="ready")
        return web.Response(status=503, text="not ready")

    async def _status_json(self, request: web.Request) -> web.Response:
        try:
            body = _render_status(self._status())
        except Exception as exc:  # noqa: BLE001 - containment: /status answers, whatever broke
            _log.error("status report failed", error=describe(exc))
            body = _render_status({"error": describe(exc)})
            return web.Response(status=500, body=body, content_type="application/json")
        return web.Response(body=body, content_type="application/json")

    async def _status_page(self, request: web.Request) -> web.Response:
        try:
            page = render_page(self._status(), now=datetime.now(UTC))
        except Exception as exc:  # noqa: BLE001 - containment: the page answers, whatever broke
            _log.error("status page failed", error=describe(exc))
            return _page(500, render_error_page(describe(exc)))
        return _page(200, page)

    async def _operate(self, request: web.Request) -> web.Response:
        operation = self._operations.get(request.match_info["operation"])
        if operation is None:
            return _error(404, f"no operation {request.match_info['operation']!r}")
        mapping = request.match_info["mapping"]
        return await self._write(request, lambda arguments: operation(mapping, arguments))

    async def _act(self, request: web.Request) -> web.Response:
        action = self._actions[request.path.lstrip("/")]
        return await self._write(request, lambda arguments: action(arguments))

    async def _write(
        self,
        request: web.Request,
        call: Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]],
    ) -> web.Response:
        if self._token is None:
            return _error(
                403, "write operations are off: set admin.token or ESM_ADMIN_TOKEN to allow them"
            )
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self._token}".encode()):
            return _error(401, "a valid token is needed (Authorization: Bearer TOKEN)")
        body = await request.read()
        try:
            arguments = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError:
            return _error(400, "the request body is not JSON")
        if not isinstance(arguments, dict):
            return _error(400, "the request body is not a JSON object")
        try:
            answer = await call(arguments)
        except LookupError as exc:
            return _error(404, str(exc.args[0] if exc.args else exc))
        except ValueError as exc:
            return _error(400, str(exc))
        except Exception as exc:  # noqa: BLE001 - containment: an operation answers, whatever broke
            _log.error("admin operation failed", error=describe(exc))
            return _error(500, describe(exc))
        return web.Response(body=_render_status(answer), content_type="application/json")


Operation = Callable[[str, Mapping[str, Any]], Awaitable[Mapping[str, Any]]]
"""An admin write operation on one mapping (by name or id) with the request's arguments;
LookupError when there is no such mapping, ValueError when the arguments cannot be done."""

Action = Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]]
"""An admin write operation on esm as a whole, with the request's arguments."""


def _error(status: int, message: str) -> web.Response:
    return web.Response(
        status=status, body=_render_status({"error": message}), content_type="application/json"
    )


def _page(status: int, page: str) -> web.Response:
    # Never cached: a page kept by a proxy or the browser would show a past state as now.
    headers = {"Cache-Control": "no-store", "Content-Security-Policy": CONTENT_SECURITY_POLICY}
    return web.Response(
        status=status, text=page, content_type="text/html", charset="utf-8", headers=headers
    )
