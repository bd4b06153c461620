"""Talking to a running esm's admin server from the command line (`esm status`, and the
commands that change a running esm): where it is, and one clear line when it does not answer."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import IO, TYPE_CHECKING, Any

from esm.errors import EsmError
from esm.redact import redact

if TYPE_CHECKING:
    from esm.config import EsmConfig

DEFAULT_URL = "http://127.0.0.1:9464"
URL_VARIABLE = "ESM_ADMIN_URL"
TOKEN_VARIABLE = "ESM_ADMIN_TOKEN"


class AdminError(EsmError):
    """The admin server could not be reached, or refused or failed the request."""


class AdminUnreachable(AdminError):
    """Nothing answers at the admin address (no esm runs there)."""


def admin_url(url: str | None, config: EsmConfig | None = None) -> str:
    """`--url`, else ESM_ADMIN_URL, else the configuration's admin.listen (0.0.0.0 and ::
    reached on the loopback address), else 127.0.0.1:9464."""
    if url:
        chosen = url
    elif os.environ.get(URL_VARIABLE):
        chosen = os.environ[URL_VARIABLE]
    elif config is not None:
        host, port = config.admin.host, config.admin.port
        host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, host)
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        chosen = f"http://{host}:{port}"
    else:
        chosen = DEFAULT_URL
    if "://" not in chosen:
        chosen = f"http://{chosen}"
    return chosen.rstrip("/")


def request(
    url: str,
    path: str,
    *,
    method: str = "GET",
    body: Mapping[str, Any] | None = None,
    token: str | None = None,
    timeout: float = 10.0,
) -> Any:
    """The JSON answer of `method` `path`; AdminError with the server's own words when it
    refuses (its JSON `error`), or with why it could not be reached."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(f"{url}{path}", data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            return json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        raise AdminError(redact(f"{url}{path}: {error.code} {_reason(error)}")) from None
    except (urllib.error.URLError, OSError) as error:
        why = getattr(error, "reason", error)
        raise AdminUnreachable(redact(f"cannot reach esm at {url}: {why}")) from None
    except ValueError as error:
        raise AdminError(redact(f"{url}{path}: the answer is not JSON ({error})")) from None


def _reason(error: urllib.error.HTTPError) -> str:
    try:
        answer = json.loads(error.read() or b"{}")
    except ValueError:
        return str(error.reason)
    if isinstance(answer, Mapping) and answer.get("error"):
        return str(answer["error"])
    return str(error.reason)


def get_status(url: str) -> Mapping[str, Any]:
    status = request(url, "/status")
    if not isinstance(status, Mapping):
        raise AdminError(f"{url}/status: not a status report")
    return status


def show_status(
    url: str,
    *,
    as_json: bool,
    watch: float | None,
    out: IO[str] = sys.stdout,
    fetch: Callable[[str], Mapping[str, Any]] = get_status,
    sleep: Callable[[float], None] = time.sleep,
    rounds: int | None = None,
) -> int:
    """Print the status once, or every `watch` seconds until interrupted (or `rounds`, for
    tests). Watching goes on through an esm that does not answer for a while."""
    from esm.status_view import render_text

    shown = 0
    while True:
        try:
            status = fetch(url)
        except AdminError as error:
            if watch is None:
                raise
            text = f"esm: {error}"
        else:
            if as_json:
                text = json.dumps(status, indent=2)
            else:
                width = shutil.get_terminal_size((160, 24)).columns if out.isatty() else 0
                text = render_text(status, width=width)
        if watch is not None and out.isatty():
            out.write("\x1b[H\x1b[2J")  # home and clear: the table redrawn in place
        out.write(text + "\n")
        out.flush()
        shown += 1
        if watch is None or (rounds is not None and shown >= rounds):
            return 0
        if not out.isatty() and not as_json:
            out.write("\n")
        sleep(watch)


def operate(
    url: str,
    mapping: str,
    operation: str,
    token: str | None,
    arguments: Mapping[str, Any] | None = None,
    *,
    timeout: float = 10.0,
) -> Mapping[str, Any]:
    """Ask a running esm to `operation` (pause, resume, seek) `mapping` with `arguments`;
    its answer. The token is `token`, else $ESM_ADMIN_TOKEN."""
    from urllib.parse import quote

    token = token or os.environ.get(TOKEN_VARIABLE)
    answer = request(
        url,
        f"/mappings/{quote(mapping, safe='')}/{operation}",
        method="POST",
        body=dict(arguments or {}),
        token=token,
        timeout=timeout,
    )
    if not isinstance(answer, Mapping):
        raise AdminError(f"{url}: unexpected answer to {operation}")
    return answer


def pause_line(answer: Mapping[str, Any], mapping: str) -> str:
    """What a pause or resume answered, as a line."""
    name = answer.get("mapping", mapping)
    state = "paused" if answer.get("paused") else "running"
    return f"mapping {name}: {state}" + ("" if answer.get("changed", True) else " (already)")
