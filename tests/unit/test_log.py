"""Tests for the logging setup: JSON line shape, levels, library lines, console mode."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import structlog

from esm.log import configure_logging, get_logger


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
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


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_has_standard_keys_then_bound_fields() -> None:
    out = io.StringIO()
    configure_logging("json", "info", out)

    get_logger(mapping="orders", shard="shardId-000000000000").info("batch delivered", records=3)

    (line,) = _lines(out)
    assert list(line)[:3] == ["timestamp", "level", "event"]
    assert line["level"] == "info"
    assert line["event"] == "batch delivered"
    assert line["mapping"] == "orders"
    assert line["shard"] == "shardId-000000000000"
    assert line["records"] == 3
    assert line["timestamp"].endswith("Z")
    stamp = datetime.fromisoformat(line["timestamp"])
    assert stamp.utcoffset() == UTC.utcoffset(None)
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60


def test_bind_adds_fields_and_unknown_values_are_strings() -> None:
    out = io.StringIO()
    configure_logging("json", "info", out)

    class Thing:
        def __str__(self) -> str:
            return "a thing"

    get_logger(mapping="orders").bind(attempt=2).warning("retrying", what=Thing())

    (line,) = _lines(out)
    assert line["level"] == "warning"
    assert line["mapping"] == "orders"
    assert line["attempt"] == 2
    assert line["what"] == "a thing"


def test_level_filters_lower_lines() -> None:
    out = io.StringIO()
    configure_logging("json", "warning", out)
    log = get_logger()

    log.debug("too low")
    log.info("too low")
    log.warning("kept")
    log.error("kept too")

    assert [line["event"] for line in _lines(out)] == ["kept", "kept too"]


def test_debug_level_shows_debug_lines() -> None:
    out = io.StringIO()
    configure_logging("json", "DEBUG", out)

    get_logger().debug("details %s", "formatted")

    (line,) = _lines(out)
    assert line["event"] == "details formatted"
    assert line["level"] == "debug"


def test_library_lines_use_the_same_format_from_warning_up() -> None:
    out = io.StringIO()
    configure_logging("json", "debug", out)
    library = logging.getLogger("aiobotocore.endpoint")

    library.info("a request was sent")
    library.warning("retrying %s after %d ms", "GetRecords", 50)

    (line,) = _lines(out)
    assert line["event"] == "retrying GetRecords after 50 ms"
    assert line["level"] == "warning"
    assert line["logger"] == "aiobotocore.endpoint"
    assert list(line)[:3] == ["timestamp", "level", "event"]


def test_exceptions_are_rendered_in_the_line() -> None:
    out = io.StringIO()
    configure_logging("json", "info", out)

    try:
        raise ValueError("bad record")
    except ValueError:
        get_logger(mapping="orders").exception("delivery failed")

    (line,) = _lines(out)
    assert line["level"] == "error"
    assert "ValueError: bad record" in line["exception"]


def test_console_mode_is_human_readable() -> None:
    out = io.StringIO()
    configure_logging("console", "info", out)

    get_logger(mapping="orders").info("batch delivered", records=3)

    text = out.getvalue()
    assert "batch delivered" in text
    assert "mapping=orders" in text
    assert "records=3" in text
    assert "\x1b[" not in text  # no colour codes when the stream is not a terminal
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(text)


def test_configuring_twice_replaces_the_first_setup() -> None:
    first, second = io.StringIO(), io.StringIO()
    log = get_logger(mapping="orders")  # created before configuration, like module loggers
    configure_logging("console", "info", first)
    configure_logging("json", "info", second)

    log.info("once")
    logging.getLogger("aiohttp.server").error("library line")

    assert first.getvalue() == ""
    assert [line["event"] for line in _lines(second)] == ["once", "library line"]


def test_unknown_level_is_rejected() -> None:
    with pytest.raises(ValueError, match="verbose"):
        configure_logging("json", "verbose", io.StringIO())


def test_auto_is_console_at_a_terminal_and_json_elsewhere() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    configure_logging("auto", "info", terminal)
    get_logger().info("hello", mapping="orders")
    line = terminal.getvalue()
    assert "hello" in line
    assert not line.startswith("{")

    piped = io.StringIO()
    configure_logging("auto", "info", piped)
    get_logger().info("hello", mapping="orders")
    assert orjson.loads(piped.getvalue())["event"] == "hello"
