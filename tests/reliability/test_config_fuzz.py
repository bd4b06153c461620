"""A fuzzer over esm.yaml: whatever the file holds, `esm validate` either accepts it (exit 0,
a summary) or lists clear problems (exit 1) - never a traceback, never an exception.

Files are mostly-valid configurations, mutated: values of the wrong type, numbers out of
range, unknown and misspelt keys, deeper nesting, odd unicode, missing sections, and text
edits of the YAML itself (stray characters, tabs, repeated lines, truncation, tags, `${...}`).

Crashes it found are kept in LOADER_REGRESSIONS, each with its reproducer, and must stay
fixed; the fuzzer tolerates no traceback at all.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import re
import subprocess
import sys
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, seed, settings
from hypothesis import strategies as st

from esm.cli import main

from .harness import SETTINGS

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.timeout(max(120, SETTINGS.fuzz_examples // 5)),
]

# Generated nesting and sizes stay modest to keep examples fast; very deep nesting and
# characters YAML forbids are checked once each in SPECIAL_FILES.
MAX_NESTING = 100
MAX_LIST = 6

# `esm run` reports configuration problems as `esm validate` does, and exits 1 too.
RUN_CONFIG_EXIT = frozenset({1})

_AT_TIMESTAMP_MAPPING = """functions:
  f: {type: http, url: "http://127.0.0.1:8080/"}
mappings:
  - FunctionName: f
    EventSourceArn: arn:aws:kinesis:us-east-1:123456789012:stream/orders
    StartingPosition: AT_TIMESTAMP
    StartingPositionTimestamp: %s
"""

LOADER_REGRESSIONS: dict[str, tuple[str, str]] = {
    # name: (what used to happen, a file that shows it). Each was found by this fuzzer and
    # fixed; each file must now give clear problem lines and exit 1.
    #
    # PyYAML's constructors raise more than yaml.YAMLError for some input:
    "int_too_long": (
        "an integer of more than 4300 digits: PyYAML's int() raises ValueError (Python's "
        "limit on integer string conversion)",
        "polling: {records_limit: 1" + "0" * 5000 + "}\nmappings: []\n",
    ),
    "impossible_date": (
        "an unquoted impossible date (2024-02-30): PyYAML's timestamp constructor raises "
        "ValueError",
        _AT_TIMESTAMP_MAPPING % "2024-02-30T00:00:00Z",
    ),
    "timestamp_tag": (
        "!!timestamp on a string that is no timestamp: PyYAML raises AttributeError",
        "state: {path: !!timestamp foo}\nmappings: []\n",
    ),
    "set_tag_on_scalar": (
        "!!set on a scalar: _Loader.construct_mapping iterates the scalar's text before "
        "PyYAML checks the node is a mapping (ValueError: not enough values to unpack)",
        "!!set null\n",
    ),
    "unhashable_key": (
        "a key that is a set (!!set): _Loader.construct_mapping looks it up in a dict before "
        "PyYAML reports an unhashable key (TypeError)",
        "{!!set : 1}\n",
    ),
    # timestamp: StartingPositionTimestamp is checked with datetime.fromtimestamp, whose
    # OverflowError is not a ValueError pydantic would turn into a problem; NaN passes.
    "timestamp_nan": (
        "StartingPositionTimestamp .nan passes validation, then describe_config's "
        "datetime.fromtimestamp raises ValueError",
        _AT_TIMESTAMP_MAPPING % ".nan",
    ),
    "timestamp_infinite": (
        "StartingPositionTimestamp .inf: _check_timestamp raises OverflowError",
        _AT_TIMESTAMP_MAPPING % ".inf",
    ),
    "timestamp_huge": ("the same with a 20-digit integer", _AT_TIMESTAMP_MAPPING % ("9" * 20)),
    # label_line_breaks: not a crash, but problems that are not one per line.
    "label_line_breaks": (
        "a mapping's label repeats its FunctionName and EventSourceArn raw, so a line break "
        "in them splits a problem over several lines",
        'functions: {}\nmappings:\n  - {FunctionName: "or\\nders", EventSourceArn: x}\n',
    ),
}


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
            # validate checks that the variable is set: PATH always is.
            "headers": {"X-Search-Path": {"env": "PATH", "prefix": "path "}},
        },
        # validate imports handlers and looks for commands, as start-up does.
        "audit": {"type": "python", "handler": "esm.examples.handlers:handle"},
        "worker": {"type": "command", "command": ["python3", "-c", "pass"], "mode": "persistent"},
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
            "MaximumRecordAgeInSeconds": 3600,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "DestinationConfig": {
                "OnFailure": {"Destination": "arn:aws:sqs:us-east-1:123456789012:orders-dlq"}
            },
        },
        {
            "FunctionName": "audit",
            "EventSourceArn": DYNAMODB_ARN,
            "StartingPosition": "LATEST",
            "TumblingWindowInSeconds": 60,
            "FilterCriteria": {"Filters": [{"Pattern": '{"eventName": ["REMOVE"]}'}]},
        },
        {
            "FunctionName": "canary",
            "EventSourceArn": SQS_ARN,
            "BatchSize": 50,
            "MaximumBatchingWindowInSeconds": 2,
            "ScalingConfig": {"MaximumConcurrency": 20},
        },
        {
            "FunctionName": "worker",
            "EventSourceArn": KINESIS_ARN,
            "StartingPosition": "AT_TIMESTAMP",
            "StartingPositionTimestamp": 1700000000,
        },
        {
            "FunctionName": "arn:aws:lambda:us-east-1:123456789012:function:real",
            "EventSourceArn": f"{KINESIS_ARN}/consumer/esm:1700000000",
            "StartingPosition": "TRIM_HORIZON",
            "DestinationConfig": {"OnFailure": {"Destination": "arn:aws:s3:::failures"}},
        },
        {
            "FunctionName": "image",
            "EventSourceArn": "arn:aws:sqs:us-east-1:123456789012:payments.fifo",
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "Enabled": False,
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
    "\u0661\u0662\u0663",  # Arabic-Indic digits
    "127.0.0.1:\u0661\u0662\u0663",
    "127.0.0.1:\u00b2",
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
    "\t",
    "app.handlers:",
    "\U0001f600:\U0001f600",
    "TRIM_HORIZON ",
    "2024-05-01T12:00:00Z",
    "2999-01-01T00:00:00Z",
    "0001-01-01T00:00:00+14:00",
    "2024-13-45T99:99:99Z",
]

text_chars = st.characters(exclude_categories=["Cs"])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**63, -(2**63), 10**30, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e20, 5e-324, 0.1, -0.0]),
    st.text(text_chars, max_size=20),
    st.sampled_from(ODD_STRINGS),
    st.dates(),
    st.datetimes(timezones=st.sampled_from([None, UTC])),
)
EDGE_NUMBERS = st.one_of(
    st.sampled_from(
        [0, -1, 1, 2**31, 2**63, -(2**63), 10**20, float("nan"), float("inf"), float("-inf")]
    ),
    st.sampled_from([1e20, -1e20, 5e-324, 0.5, -0.0, 1e308, 10000, 10001, 900, 901, 43201]),
    st.integers(),
    st.floats(),
)
keys = st.one_of(
    st.text(text_chars, max_size=12),
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
                [
                    "replace",
                    "replace",
                    "edge_number",
                    "delete",
                    "unknown_key",
                    "rename",
                    "wrap",
                    "nest",
                    "grow",
                ]
            )
        )
        numbers = [
            p
            for p in paths
            if isinstance(_get(doc, p), int | float) and not isinstance(_get(doc, p), bool)
        ]
        if operation == "edge_number" and numbers:
            # Range checks: a number where a number belongs, just not a sensible one.
            doc = _set(doc, draw(st.sampled_from(numbers)), draw(EDGE_NUMBERS))
        elif operation == "replace" or (operation == "delete" and not path):
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
        st.sampled_from(["insert", "insert", "delete", "repeat_line", "tab", "truncate", "alias"])
    )
    position = data.draw(st.integers(0, max(0, len(text) - 1)))
    if edit == "insert":
        junk = data.draw(
            st.one_of(
                st.text(text_chars, min_size=1, max_size=8),
                st.sampled_from(TEXT_JUNK),
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


TEXT_JUNK = [
    "${",
    "${A:-",
    "$",
    ":",
    "- ",
    "{",
    "[",
    "&a",
    "*a",
    "*nowhere",
    "<<: *a\n",
    "!!python/object:os.system",
    "!!binary ",
    "!!timestamp ",
    "!!int ",
    "!!float ",
    "!!set ",
    "!!omap ",
    "!!str ",
    "!custom ",
    "\t",
    "'",
    '"',
    "? ",
    "? [a, b]\n: c\n",
    "%YAML 1.1\n",
    "%TAG ! tag:example.com,2000:\n",
    "---\n",
    "...\n",
    "#",
    " 2024-02-30",
    " 1" + "0" * 4400,
    " .nan",
    " .inf",
    " 0x" + "f" * 20,
    " 0o777",
    " 1_000",
    " 190:20:30",
    "\u2028",
    "\x85",
]


def check_validate(path: Path, *, must_pass: bool = False) -> str:
    """`esm validate -c path` in-process; asserts the outcome is exit 0 with a summary or
    exit 1 with clear problems. Returns the outcome: "valid" or "invalid"."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["validate", "-c", str(path)])
        except BaseException as exc:  # anything escaping is what this test looks for
            text = path.read_text(encoding="utf-8", errors="replace")
            raise AssertionError(
                f"esm validate raised {type(exc).__name__}: {exc!r}\n--- file ---\n{text[:2000]}"
            ) from exc
    stdout, stderr = out.getvalue(), err.getvalue()
    assert_clear(code, stdout, stderr, path)
    if must_pass:
        assert code == 0, stderr
    return "valid" if code == 0 else "invalid"


def assert_clear(
    code: int, stdout: str, stderr: str, path: Path, exits: frozenset[int] = frozenset({1})
) -> None:
    text = path.read_text(encoding="utf-8", errors="replace")
    shown = text[:2000]
    both = stdout + stderr
    assert "Traceback" not in both, f"{both}\n--- file ---\n{shown}"
    assert code in {0, *exits}, f"exit {code}\n{both}\n--- file ---\n{shown}"
    if code == 0:
        assert re.match(r"\d+ mappings?, \d+ functions?\n", stdout), stdout
        return
    header = re.match(r"configuration invalid: (\d+) problem\(s\)\n", stderr)
    assert header, f"{both}\n--- file ---\n{shown}"
    lines = stderr.rstrip("\n").split("\n")
    problems = [line for line in lines[1:] if line.startswith("  - ")]
    # Every line after the header is one problem, none empty.
    assert len(problems) == int(header[1]) == len(lines) - 1 > 0, f"{stderr}\n--- file ---\n{shown}"
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
    assert check_validate(path, must_pass=True) == "valid"


@seed(SETTINGS.seed)
@FUZZ
@given(documents=documents(), data=st.data())
def test_validate_never_crashes(
    documents: tuple[Any, bool], data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    doc, pristine = documents
    text = _dump(doc)
    edited = data.draw(st.integers(0, 2)) == 0
    if edited:
        text = _edit_text(text, data)
    path = tmp_path_factory.mktemp("fuzz") / "esm.yaml"
    path.write_text(text, encoding="utf-8")
    event(check_validate(path, must_pass=pristine and not edited))


@seed(SETTINGS.seed)
@FUZZ
@given(
    raw=st.binary(max_size=400)
    | st.text(max_size=400).map(lambda t: t.encode("utf-8", "surrogatepass"))
)
def test_validate_never_crashes_on_arbitrary_bytes(
    raw: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "esm.yaml"
    path.write_bytes(raw)
    event(check_validate(path))


@pytest.mark.parametrize("name", sorted(LOADER_REGRESSIONS))
def test_fixed_loader_cases_stay_fixed(name: str, tmp_path: Path) -> None:
    """Each crash the fuzzer found, now one clear problem and exit 1."""
    path = tmp_path / "esm.yaml"
    path.write_text(LOADER_REGRESSIONS[name][1], encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["validate", "-c", str(path)])
    assert code == 1
    lines = err.getvalue().rstrip("\n").split("\n")
    assert lines[0].startswith("configuration invalid:")
    assert all(line.startswith("  - ") for line in lines[1:])


SPECIAL_FILES = {
    # Aliases referencing each other (the "billion laughs" shape): YAML shares the nodes, so
    # the file loads at once, and problems show values through a bounded repr.
    "laughs": "a: &a [x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcd", "bcde", strict=True)
    )
    + "functions: *e\nmappings: *e\n",
    "recursive_alias": "mappings: &m [*m]\nfunctions: {}\n",
    "python_tag": "functions: !!python/object/apply:os.system ['true']\nmappings: []\n",
    "merge_keys": (
        "base: &b {type: http}\nfunctions:\n  f: {<<: *b, url: 'http://x/'}\nmappings: []\n"
    ),
    "bom": "\ufeffmappings: []\n",
    "only_comment": "# nothing\n",
    "document_list": "---\nmappings: []\n---\nmappings: []\n",
    "huge_int": f"polling: {{records_limit: {10**4000}}}\nmappings: []\n",
    "unprintable_character": "\x1f{}\n",
    "unprintable_nul": "mappings: [\x00]\n",
    "unprintable_noncharacter": "log: {level: \ufffe}\n",
    "deep_nesting": "functions: " + "[" * 5000 + "]" * 5000 + "\nmappings: []\n",
    "deep_mapping_nesting": "functions: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
    "deep_but_modest": "functions: " + "[" * MAX_NESTING + "]" * MAX_NESTING + "\nmappings: []\n",
    "timestamp_far_past": _AT_TIMESTAMP_MAPPING % "0001-01-01T00:00:00+14:00",
    "timestamp_future": _AT_TIMESTAMP_MAPPING % "2999-01-01T00:00:00Z",
    "timestamp_negative": _AT_TIMESTAMP_MAPPING % "-1e300",
}


@pytest.mark.parametrize("name", sorted(SPECIAL_FILES))
def test_validate_special_files(name: str, tmp_path: Path) -> None:
    path = tmp_path / "esm.yaml"
    path.write_text(SPECIAL_FILES[name], encoding="utf-8")
    assert check_validate(path) == "invalid"


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
    path.write_text(text, encoding="utf-8")
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
