"""The status page in a real browser: headless chromium loads `/` from an esm running against
moto (a Kinesis stream, a queue, and a paused queue) and shows what a person should read.

Without chromium the test is skipped, unless ESM_REQUIRE_BROWSER is set (.ci/run sets it and
installs chromium): there a missing browser fails the run instead of hiding the test.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from esm.daemon import Daemon
from esm.testing import RecordingBackend

from ..html_table import read_page
from .helpers import create_stream, daemon_config, put_records

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.browser]


def chromium() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    why = "chromium is not installed (apt-get install chromium)"
    if os.environ.get("ESM_REQUIRE_BROWSER"):
        pytest.fail(f"ESM_REQUIRE_BROWSER is set but {why}")
    pytest.skip(why)


async def browse(url: str, *options: str, profile: Path) -> bytes:
    """Run headless chromium on `url` with `options`; its stdout. A profile of the test's
    own, so that runs side by side do not share (or lock) one."""
    command = [
        chromium(),
        "--headless",
        "--disable-gpu",
        "--no-sandbox",  # containers run it as root, where the sandbox cannot start
        "--disable-dev-shm-usage",  # a container's /dev/shm is often too small for it
        "--no-first-run",
        f"--user-data-dir={profile}",
        *options,
        url,
    ]
    with anyio.fail_after(90):
        done = await anyio.run_process(command, check=False)
    # Its stderr is full of harmless complaints (no D-Bus in a container): shown on failure only.
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done.stdout


async def test_a_browser_shows_each_mapping_with_its_state(
    moto_endpoint: str, kinesis: Any, sqs: Any, stream_name: str, tmp_path: Path
) -> None:
    chromium()  # skip (or fail) before setting anything up
    arn = await create_stream(kinesis, stream_name, 2)
    queues = {name: f"{name}-{uuid.uuid4().hex[:8]}" for name in ("jobs", "audit")}
    for queue in queues.values():
        await sqs.create_queue(QueueName=queue)
    extra = "".join(
        f"  - FunctionName: fn\n    EventSourceArn: arn:aws:sqs:us-east-1:123456789012:{queue}\n"
        f"    name: {name}\n"
        for name, queue in queues.items()
    )
    config = daemon_config(
        moto_endpoint, arn, batch_size=10, extra_mapping=f"    name: orders\n{extra}"
    )
    # moto's server answers one request at a time: a long poll would hold up the stream.
    config = config.model_copy(
        update={"sqs": config.sqs.model_copy(update={"wait_time_seconds": 0})}
    )
    backend = RecordingBackend()
    daemon = Daemon(config, backends={"fn": backend})
    await put_records(kinesis, stream_name, 5)
    async with anyio.create_task_group() as tg:
        await tg.start(
            lambda task_status: daemon.run(handle_signals=False, task_status=task_status)
        )
        with anyio.fail_after(30):
            while not backend.events or not all(
                m.get("ready") for m in daemon.status()["mappings"]
            ):
                await anyio.sleep(0.05)
        daemon.pause("audit")
        url = f"http://127.0.0.1:{daemon.admin_port}/"

        dom = (await browse(url, "--dump-dom", profile=tmp_path / "profile")).decode()
        screenshot = tmp_path / "status-page.png"
        await browse(
            url,
            f"--screenshot={screenshot}",
            "--window-size=1200,700",
            "--hide-scrollbars",
            profile=tmp_path / "profile",
        )
        daemon.request_stop()

    page = read_page(dom)
    assert page.by_tag["h1"][0].startswith("esm ready, up ")
    assert page.by_tag["h1"][0].endswith(", 3 mappings")
    rows = {row[0]: row for row in page.texts()}
    assert set(rows) == {"orders", "jobs", "audit"}
    assert rows["orders"][1:5] == [f"kinesis {stream_name}", "fn", "running", "2 shards"]
    assert rows["jobs"][1:4] == [f"sqs {queues['jobs']}", "fn", "running"]
    assert rows["jobs"][4].endswith(" pollers")
    assert rows["audit"][1:4] == [f"sqs {queues['audit']}", "fn", "paused"]
    states = {row[0].text: row[3].classes for row in page.rows}
    assert "paused" in states["audit"]
    assert "ok" in states["orders"]
    # A picture of it, as the browser drew it.
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
