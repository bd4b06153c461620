"""Logging setup: structlog for esm's own lines, the same format for library lines."""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from esm.redact import redact

__all__ = ["LogFormat", "configure_logging", "get_logger"]

LogFormat = Literal["auto", "json", "console"]

# esm's records go through this stdlib logger (and its children), at the configured level.
_ESM_LOGGER = "esm"
# Libraries (aiobotocore, aiohttp, ...) are heard from at this level or above: their info
# lines describe every request and would bury esm's.
_LIBRARY_LEVEL = logging.WARNING
# Keys that open every JSON line, in this order, so lines read alike in a terminal.
_LEADING_KEYS = ("timestamp", "level", "event")


class _EsmHandler(logging.StreamHandler[TextIO]):
    """The handler configure_logging installs on the root logger (found again by its type)."""


def _lead_with_standard_keys(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    ordered = {key: event_dict.pop(key) for key in _LEADING_KEYS if key in event_dict}
    ordered.update(event_dict)
    return ordered


def _json_default(value: object) -> object:
    return str(value)


def _dumps(event_dict: EventDict, **_: Any) -> str:
    # str(), not bytes: logging handlers write text.
    return orjson.dumps(event_dict, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()


def _redact_line(_: WrappedLogger, __: str, line: Any) -> str:
    # The rendered line, so that a URL's password is hidden wherever it appears: a field, an
    # error text, a library's message, a traceback.
    return redact(str(line))


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def _parse_level(level: str) -> int:
    levels = logging.getLevelNamesMapping()
    try:
        return levels[level.strip().upper()]
    except KeyError:
        names = ", ".join(n.lower() for n in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
        raise ValueError(f"unknown log level {level!r}; expected one of {names}") from None


def configure_logging(
    format: LogFormat = "json", level: str = "info", stream: TextIO | None = None
) -> None:
    """Send esm's logs and library warnings to `stream` (stderr by default), one line each.

    `auto`: `console` when `stream` is a terminal, else `json`.
    `json`: one JSON object per line with `timestamp` (ISO-8601, UTC), `level`, `event`,
    then the bound fields; lines from other libraries also carry `logger`. `console`:
    aligned, human-readable lines (coloured when `stream` is a terminal).

    Calling it again replaces the previous configuration.

    :raises ValueError: `level` is not a logging level name.
    """
    numeric_level = _parse_level(level)
    out = stream if stream is not None else sys.stderr
    if format == "auto":
        # A person at a terminal reads console lines; a log collector gets JSON.
        format = "console" if _is_terminal(out) else "json"

    # Run for esm's lines and for library lines alike, before rendering.
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: list[Processor]
    if format == "json":
        renderer = [
            structlog.processors.format_exc_info,
            _lead_with_standard_keys,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ]
    elif format == "console":
        renderer = [structlog.dev.ConsoleRenderer(colors=_is_terminal(out))]
    else:
        raise ValueError(f"unknown log format {format!r}; expected 'auto', 'json' or 'console'")

    structlog.configure(
        processors=[
            # Drop filtered-out lines before any work is spent on them.
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached, so that reconfiguring (and structlog.testing.capture_logs in tests)
        # also reaches loggers created at import time.
        cache_logger_on_first_use=False,
    )

    handler = _EsmHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *renderer,
                _redact_line,
            ],
        )
    )

    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _EsmHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(max(numeric_level, _LIBRARY_LEVEL))
    logging.getLogger(_ESM_LOGGER).setLevel(numeric_level)


def get_logger(**bound: Any) -> structlog.stdlib.BoundLogger:
    """esm's logger with `bound` fields on every line it writes (e.g. mapping=, shard=)."""
    return structlog.stdlib.get_logger(_ESM_LOGGER, **bound)
