"""The canned servers' common start: an aiohttp app answering POSTs on a free port of
127.0.0.1 (imported by bare name, like common.py, from the benchmarks' directory)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web


async def start_local_server(
    handle: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> tuple[web.AppRunner, int]:
    """The started runner (`await runner.cleanup()` to stop) and its port; every POST, on any
    path, goes to `handle`."""
    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, int(runner.addresses[0][1])
