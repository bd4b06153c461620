"""A URL's password never reaches output: the helper, then each place esm prints a URL
(`esm validate`, configuration problems, /status, log lines)."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson
import pytest
import structlog

from esm.admin import AdminServer
from esm.cli import main
from esm.config import parse_config
from esm.errors import ConfigError
from esm.log import configure_logging, get_logger
from esm.metrics import Metrics
from esm.redact import redact

PASSWORD = "pw-5e1f0c9a"
TOKEN = "tok-77b2d4e1"
URL = f"http://alice:{PASSWORD}@127.0.0.1:8080/invoke"
SHOWN = "http://alice:***@127.0.0.1:8080/invoke"

CONFIG = f"""
aws:
  endpoint_url: "http://key:{PASSWORD}@127.0.0.1:4566"
functions:
  orders: {{type: http, url: "{URL}"}}
  tokened: {{type: http, url: "https://{TOKEN}@example.com/"}}
mappings:
  - FunctionName: orders
    EventSourceArn: arn:aws:kinesis:us-east-1:123456789012:stream/orders
    StartingPosition: TRIM_HORIZON
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (URL, SHOWN),
        (f"https://{TOKEN}@example.com/", "https://***@example.com/"),
        (
            f"cannot reach {URL}: ClientConnectorError",
            f"cannot reach {SHOWN}: ClientConnectorError",
        ),
        # A password may hold ":" and (unencoded) "@": everything up to the host is hidden.
        (f"http://alice:{PASSWORD}:x@y@host/", "http://alice:***@host/"),
        # In JSON or a repr the match never runs past the URL's closing quote.
        (f'["{URL}", "bob@example.com"]', f'["{SHOWN}", "bob@example.com"]'),
        (f"'{URL}'", f"'{SHOWN}'"),
        # Nothing to hide.
        ("http://127.0.0.1:8080/a@b", "http://127.0.0.1:8080/a@b"),
        ("write to ops@example.com", "write to ops@example.com"),
        ("http://example.com/ and ops@example.com", "http://example.com/ and ops@example.com"),
    ],
)
def test_redact_hides_the_password_of_every_url(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_validate_summary_hides_url_passwords(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "esm.yaml"
    path.write_text(CONFIG)

    assert main(["validate", "-c", str(path)]) == 0

    out = capsys.readouterr().out
    assert f"function orders: http {SHOWN} " in out
    assert "function tokened: http https://***@example.com/ " in out
    assert "endpoints http://key:***@127.0.0.1:4566" in out
    assert PASSWORD not in out
    assert TOKEN not in out


def test_configuration_problems_hide_url_passwords(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = CONFIG.replace("http://alice", "ftp://alice").replace(
        "TRIM_HORIZON", f"{URL}\n    Tags: {{t: [{URL}]}}"
    )
    with pytest.raises(ConfigError) as raised:
        parse_config(text, {})
    problems = raised.value.problems
    assert any("ftp://alice:***@" in problem for problem in problems), problems
    assert any(SHOWN in problem for problem in problems), problems
    assert PASSWORD not in str(raised.value)

    path = tmp_path / "esm.yaml"
    path.write_text(text)
    assert main(["validate", "-c", str(path)]) == 1
    assert PASSWORD not in capsys.readouterr().err


class _Opaque:
    def __str__(self) -> str:
        return f"a backend posting to {URL}"


@pytest.fixture
async def status_page() -> AsyncIterator[str]:
    status = {
        "mappings": [{"last_error": f"cannot reach {URL}: ClientConnectorError"}],
        "backend": _Opaque(),
        URL: "a key",
    }
    server = AdminServer(Metrics().registry, ready=lambda: True, status=lambda: status)
    async with anyio.create_task_group() as tg:
        port = await tg.start(server.serve, "127.0.0.1", 0)
        yield f"http://127.0.0.1:{port}/status"
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_status_page_hides_url_passwords(status_page: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(status_page) as response:
        raw = await response.read()

    assert PASSWORD.encode() not in raw
    assert orjson.loads(raw) == {
        "mappings": [{"last_error": f"cannot reach {SHOWN}: ClientConnectorError"}],
        "backend": f"a backend posting to {SHOWN}",
        SHOWN: "a key",
    }


@pytest.fixture
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    esm = logging.getLogger("esm")
    handlers, root_level, esm_level = list(root.handlers), root.level, esm.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(root_level)
    esm.setLevel(esm_level)
    structlog.reset_defaults()


@pytest.mark.usefixtures("_restore_logging")
@pytest.mark.parametrize("format", ["json", "console"])
def test_log_lines_hide_url_passwords(format: Any) -> None:
    out = io.StringIO()
    configure_logging(format, "info", out)

    log = get_logger(function="orders", url=URL)
    log.warning("function unreachable", error=f"cannot reach {URL}")
    try:
        raise ValueError(f"bad answer from {URL}")
    except ValueError:
        log.exception("invocation failed")
    logging.getLogger("aiohttp.client").warning("library line about %s", URL)

    text = out.getvalue()
    assert PASSWORD not in text
    assert text.count("alice:***@") >= 5, text
    if format == "json":
        lines = [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert lines[0]["url"] == SHOWN
