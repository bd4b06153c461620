"""A fuzzer over esm.yaml: whatever the file holds, `esm validate` either accepts it (exit 0,
a summary) or lists clear problems (exit 1) - never a traceback, never an exception.

Files are mostly-valid configurations, mutated: values of the wrong type, numbers out of
range, unknown and misspelt keys, deeper nesting, odd unicode, missing sections, and text
edits of the YAML itself (stray characters, tabs, repeated lines, truncation, `${...}`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from esm.cli import main

from .harness import SETTINGS

pytestmark = [pytest.mark.reliability]

# Nesting is kept modest: YAML nested thousands deep is a known RecursionError in the YAML
# loader, fixed separately (tests/unit/test_config.py covers it once fixed).
MAX_NESTING = 100
# A huge file of unknown keys is known to be slow to report; files stay small here.
MAX_LIST = 6

# Characters YAML does not allow anywhere in a file (C0 controls but tab and newlines, DEL,
# C1 controls but NEL, U+FFFE/U+FFFF): esm validate raises yaml's ReaderError with a
# traceback instead of reporting a problem. Reported; until it is fixed the generators leave
# these characters out, and test_unprintable_character_is_a_problem documents the case.
_UNPRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)


def printable(text: str) -> str:
    return _UNPRINTABLE.sub("", text)


# `esm run` exits 2 on configuration problems today and is being changed to exit 1 like
# `esm validate`; both are accepted until then.
RUN_CONFIG_EXIT = frozenset({1, 2})

KINESIS_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/orders"
DYNAMODB_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024-01-01T00:00:00.000"
SQS_ARN = "arn:aws:sqs:us-east-1:123456789012:payments"

BASE: dict[str, Any] = {
    "aws": {"region": "us-east-1", "endpoint_url": "http://127.0.0.1:4566"},
    "state": {"backend": "sqlite", "path": "esm-state.db"},
    "admin": {"listen": "127.0.0.1:9464"},
    "log": {"format": "json", "level": "info"},
    "delivery": {
        "backoff_initial_seconds": 1,
        "backoff_max_seconds": 300,
        "shutdown_grace_seconds": 30,
    },
    "polling": {"interval_seconds": 1, "records_limit": 10000},
    "sqs": {"wait_time_seconds": 20, "failure_visibility_timeout_seconds": 30},
    "functions": {
        "orders": {
            "type": "http",
            "url": "http://127.0.0.1:8080/",
            "timeout": 30,
            "headers": {"Authorization": {"env": "TOKEN", "prefix": "Bearer "}},
        },
        "audit": {"type": "python", "handler": "app.handlers:handle"},
        "worker": {"type": "command", "command": ["python3", "handler.py"], "mode": "persistent"},
        "real": {"type": "lambda", "function_name": "orders", "qualifier": "live"},
        "image": {"type": "runtime", "listen": "127.0.0.1:9001"},
        "canary": {
            "type": "weighted",
            "targets": [{"function": "orders", "weight": 90}, {"function": "audit", "weight": 10}],
        },
    },
    "mappings": [
        {
            "FunctionName": "orders",
            "EventSourceArn": KINESIS_ARN,
            "StartingPosition": "TRIM_HORIZON",
            "BatchSize": 500,
            "MaximumBatchingWindowInSeconds": 1,
            "ParallelizationFactor": 4,
            "BisectBatchOnFunctionError": True,
            "MaximumRetryAttempts": 3,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "DestinationConfig": {
                "OnFailure": {"Destination": "arn:aws:sqs:us-east-1:123456789012:orders-dlq"}
            },
        },
        {
            "FunctionName": "audit",
            "EventSourceArn": DYNAMODB_ARN,
            "StartingPosition": "LATEST",
            "FilterCriteria": {"Filters": [{"Pattern": '{"eventName": ["REMOVE"]}'}]},
        },
        {
            "FunctionName": "canary",
            "EventSourceArn": SQS_ARN,
            "BatchSize": 50,
            "MaximumBatchingWindowInSeconds": 2,
            "ScalingConfig": {"MaximumConcurrency": 20},
        },
    ],
}

ODD_STRINGS = [
    "",
    " ",
    "0",
    "-1",
    "1e309",
    "yes",
    "null",
    "~",
    "${",
    "${X",
    "${1}",
    "${ESM_FUZZ_UNSET}",
    "${ESM_FUZZ_UNSET:-}",
    "$$",
    "\u202etxet",
    "\u200b",
    "\ufeff",
    "\U0001d518\U0001d52b\U0001d526\U0001d520",  # fraktur letters
    "\uff55\uff53-\uff45\uff41\uff53\uff54-\uff11",  # full-width us-east-1
    "١٢٣",
    "127.0.0.1:١٢٣",
    "arn:aws:kinesis:us-east-1:123456789012:stream/",
    "arn:aws:sqs:::",
    "arn:aws:lambda:us-east-1:123456789012:function:orders:$LATEST",
    "127.0.0.1:",
    ":9464",
    "[::1]:9464",
    "[::1:9464",
    "host:99999999999999999999",
    "http://",
    "https://[::1",
    "http://exa mple.com/",
    "x" * 3000,
    "\x00",
    "\t",
    "app.handlers:",
    "😀:😀",
    "TRIM_HORIZON\n",
    "2024-13-45T99:99:99Z",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**63, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=20),
    st.sampled_from(ODD_STRINGS),
)
keys = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
    st.sampled_from(["type", "mappings", "functions", "BatchSize", "batchsize", "Batch Size"]),
    st.integers(min_value=-5, max_value=5),
    st.booleans(),
    st.none(),
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=MAX_LIST) | st.dictionaries(keys, children, max_size=MAX_LIST)
    ),
    max_leaves=12,
)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for key, child in node.items():
            out += _paths(child, (*path, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            out += _paths(child, (*path, index))
    return out


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    _get(doc, path[:-1])[path[-1]] = value
    return doc


def _nest(value: Any, depth: int, as_list: bool) -> Any:
    for level in range(depth):
        value = [value] if as_list else {f"n{level}": value}
    return value


@st.composite
def documents(draw: st.DrawFn) -> tuple[Any, bool]:
    """A configuration as data, and whether it is still exactly the valid BASE."""
    doc: Any = copy.deepcopy(BASE)
    pristine = True
    for section in list(doc):
        if draw(st.integers(0, 9)) == 0:
            del doc[section]
            pristine = False
    for _ in range(draw(st.integers(0, 4))):
        pristine = False
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        target = _get(doc, path)
        operation = draw(
            st.sampled_from(
                ["replace", "replace", "delete", "unknown_key", "rename", "wrap", "nest", "grow"]
            )
        )
        if operation == "replace" or (operation == "delete" and not path):
            doc = _set(doc, path, draw(values))
        elif operation == "delete":
            parent = _get(doc, path[:-1])
            del parent[path[-1]]
        elif operation == "unknown_key" and isinstance(target, dict):
            target[draw(keys)] = draw(values)
        elif operation == "rename" and path and isinstance(path[-1], str):
            parent = _get(doc, path[:-1])
            old = path[-1]
            new = draw(
                st.sampled_from(
                    [
                        old.lower(),
                        old.upper(),
                        old + "s",
                        old[:-1],
                        old.replace("_", "-"),
                        f" {old}",
                    ]
                )
            )
            parent[new] = parent.pop(old)
        elif operation == "wrap":
            doc = _set(doc, path, draw(st.sampled_from([[target], {"value": target}])))
        elif operation == "nest":
            depth = draw(st.integers(1, MAX_NESTING))
            doc = _set(doc, path, _nest(target, depth, draw(st.booleans())))
        elif operation == "grow" and isinstance(target, list):
            target.extend(copy.deepcopy(target[: draw(st.integers(0, 3))]))
        else:
            doc = _set(doc, path, draw(values))
    return doc, pristine


def _edit_text(text: str, data: st.DataObject) -> str:
    """Text-level damage that a data structure cannot express."""
    lines = text.splitlines(keepends=True)
    edit = data.draw(
        st.sampled_from(["insert", "delete", "repeat_line", "tab", "truncate", "anchor"])
    )
    position = data.draw(st.integers(0, max(0, len(text) - 1)))
    if edit == "insert":
        junk = data.draw(
            st.one_of(
                st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8),
                st.sampled_from(
                    [
                        "${",
                        "${A:-",
                        "$",
                        ":",
                        "- ",
                        "{",
                        "[",
                        "&a",
                        "*a",
                        "!!python/object:os.system",
                        "\t",
                        "'",
                        '"',
                        "? ",
                        "%YAML 1.1\n",
                        "---\n",
                        "...\n",
                    ]
                ),
            )
        )
        return text[:position] + junk + text[position:]
    if edit == "delete":
        length = data.draw(st.integers(1, 20))
        return text[:position] + text[position + length :]
    if edit == "repeat_line" and lines:
        index = data.draw(st.integers(0, len(lines) - 1))
        return "".join(lines[: index + 1] + lines[index:])
    if edit == "tab":
        return text.replace("  ", "\t", data.draw(st.integers(1, 3)))
    if edit == "truncate":
        return text[:position]
    # A self-referencing alias: YAML builds a recursive structure.
    return "root: &a [*a]\n" + text


def check_validate(path: Path, *, must_pass: bool = False) -> tuple[int, str]:
    """`esm validate -c path` in-process; asserts the outcome is 0 or clear problems and 1."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["validate", "-c", str(path)])
        except BaseException as exc:  # anything escaping is the bug this test looks for
            text = path.read_text(encoding="utf-8", errors="replace")
            raise AssertionError(
                f"esm validate raised {type(exc).__name__}: {exc!r}\n--- file ---\n{text[:2000]}"
            ) from exc
    stdout, stderr = out.getvalue(), err.getvalue()
    assert_clear(code, stdout, stderr, path)
    if must_pass:
        assert code == 0, stderr
    return code, stdout + stderr


def assert_clear(
    code: int, stdout: str, stderr: str, path: Path, exits: frozenset[int] = frozenset({1})
) -> None:
    text = path.read_text(encoding="utf-8", errors="replace")[:2000]
    both = stdout + stderr
    assert "Traceback" not in both, f"{both}\n--- file ---\n{text}"
    assert code in {0, *exits}, f"exit {code}\n{both}\n--- file ---\n{text}"
    if code == 0:
        assert re.match(r"\d+ mappings?, \d+ functions?\n", stdout), stdout
        return
    header = re.match(r"configuration invalid: (\d+) problem\(s\)\n", stderr)
    assert header, f"{both}\n--- file ---\n{text}"
    problems = [line for line in stderr.splitlines()[1:] if line.startswith("  - ")]
    assert len(problems) == int(header[1]) > 0, f"{stderr}\n--- file ---\n{text}"
    # Every line is a problem: no stray output, no empty problems.
    assert len(stderr.splitlines()) == 1 + len(problems), stderr
    assert all(line[4:].strip() for line in problems), stderr


def _dump(doc: Any) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=100)


FUZZ = settings(
    max_examples=SETTINGS.fuzz_examples,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_base_configuration_is_valid(tmp_path: Path) -> None:
    """The fuzzer's starting point validates: mutations are what make files invalid."""
    path = tmp_path / "esm.yaml"
    path.write_text(_dump(BASE), encoding="utf-8")
    check_validate(path, must_pass=True)


@seed(SETTINGS.seed)
@FUZZ
@given(documents=documents(), data=st.data())
def test_validate_never_crashes(
    documents: tuple[Any, bool], data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    doc, pristine = documents
    text = _dump(doc)
    edited = data.draw(st.integers(0, 3)) == 0
    if edited:
        text = _edit_text(text, data)
    path = tmp_path_factory.mktemp("fuzz") / "esm.yaml"
    path.write_text(printable(text), encoding="utf-8")
    check_validate(path, must_pass=pristine and not edited)


@seed(SETTINGS.seed)
@FUZZ
@given(
    raw=st.binary(max_size=400) | st.text(max_size=400).map(lambda t: t.encode("utf-8", "replace"))
)
def test_validate_never_crashes_on_arbitrary_bytes(
    raw: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Bytes that are not UTF-8 stay as they are: a problem of their own.
    with contextlib.suppress(UnicodeDecodeError):
        raw = printable(raw.decode("utf-8")).encode("utf-8")
    path = tmp_path_factory.mktemp("fuzz") / "esm.yaml"
    path.write_bytes(raw)
    check_validate(path)


@pytest.mark.xfail(
    reason="known: a character YAML forbids (here U+001F) raises ReaderError with a traceback",
    strict=False,
)
@pytest.mark.parametrize("text", ["\x1f{}\n", "mappings: [\x00]\n", "log: {level: \ufffe}\n"])
def test_unprintable_character_is_a_problem(text: str, tmp_path: Path) -> None:
    path = tmp_path / "esm.yaml"
    path.write_text(text, encoding="utf-8")
    check_validate(path)


SPECIAL_FILES = {
    # Aliases referencing each other (the "billion laughs" shape) stay cheap: YAML shares
    # the nodes, and validation fails on the first level.
    "laughs": "a: &a [x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n"
        for p, c in zip("abcdefg", "bcdefgh", strict=True)
    )
    + "functions: *h\nmappings: *h\n",
    "recursive_alias": "mappings: &m [*m]\nfunctions: {}\n",
    "python_tag": "functions: !!python/object/apply:os.system ['true']\nmappings: []\n",
    "merge_keys": (
        "base: &b {type: http}\nfunctions:\n  f: {<<: *b, url: 'http://x/'}\nmappings: []\n"
    ),
    "bom": "\ufeffmappings: []\n",
    "only_comment": "# nothing\n",
    "document_list": "---\nmappings: []\n---\nmappings: []\n",
    "huge_int": f"polling: {{records_limit: {10**4000}}}\nmappings: []\n",
    "deep_but_modest": "functions: " + "[" * MAX_NESTING + "]" * MAX_NESTING + "\nmappings: []\n",
}


@pytest.mark.parametrize("name", sorted(SPECIAL_FILES))
def test_validate_special_files(name: str, tmp_path: Path) -> None:
    path = tmp_path / "esm.yaml"
    path.write_text(SPECIAL_FILES[name], encoding="utf-8")
    check_validate(path)


def _subprocess(command: str, path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESM_FUZZ")}
    return subprocess.run(
        [sys.executable, "-m", "esm", command, "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


@seed(SETTINGS.seed)
@settings(FUZZ, max_examples=4)
@given(documents=documents(), data=st.data())
def test_validate_as_a_process(
    documents: tuple[Any, bool], data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    doc, _ = documents
    text = _dump(doc)
    if data.draw(st.booleans()):
        text = _edit_text(text, data)
    path = tmp_path_factory.mktemp("fuzz") / "esm.yaml"
    path.write_text(printable(text), encoding="utf-8")
    done = _subprocess("validate", path)
    assert_clear(done.returncode, done.stdout, done.stderr, path)


@pytest.mark.parametrize("name", ["laughs", "recursive_alias", "huge_int"])
def test_run_reports_config_problems_without_traceback(name: str, tmp_path: Path) -> None:
    """`esm run` on a bad file: the same problem lines as validate, and no daemon starts."""
    path = tmp_path / "esm.yaml"
    path.write_text(SPECIAL_FILES[name], encoding="utf-8")
    done = _subprocess("run", path)
    assert_clear(done.returncode, done.stdout, done.stderr, path, exits=RUN_CONFIG_EXIT)
    assert done.returncode != 0
