"""The command line: validate's output and exit codes, run's handling of bad settings."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from esm.cli import main

GOOD = """
functions:
  orders: {type: http, url: "http://127.0.0.1:8080/"}
mappings:
  - FunctionName: orders
    EventSourceArn: arn:aws:kinesis:us-east-1:123456789012:stream/orders
    StartingPosition: TRIM_HORIZON
    BatchSize: 500
"""


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "esm.yaml"
    path.write_text(text)
    return str(path)


def test_validate_prints_a_summary_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "-c", _write(tmp_path, GOOD)]) == 0
    out = capsys.readouterr().out
    assert "kinesis stream orders" in out
    assert "batch size 500" in out


def test_validate_prints_every_problem_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = GOOD.replace(
        "BatchSize: 500", "BatchSize: 0\n    ParallelizationFactor: 11\n    Bogus: 1"
    )
    assert main(["validate", "-c", _write(tmp_path, bad)]) == 1
    err = capsys.readouterr().err
    assert "3 problem(s)" in err
    assert "BatchSize" in err
    assert "ParallelizationFactor" in err
    assert "Bogus" in err


def _both(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit code and stderr of `esm validate ...`, checked to be those of `esm run ...`."""
    code = main(["validate", *args])
    err = capsys.readouterr().err
    assert (main(["run", *args]), capsys.readouterr().err) == (code, err)
    return code, err


def test_run_and_validate_refuse_an_invalid_configuration_alike(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = GOOD.replace("BatchSize: 500", "BatchSize: 0")
    code, err = _both(["-c", _write(tmp_path, bad)], capsys)
    assert code == 1
    assert "1 problem(s)" in err
    assert "BatchSize" in err


def test_run_and_validate_report_a_missing_file_alike(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.yaml"
    assert _both(["-c", str(missing)], capsys) == (
        1,
        "configuration invalid: 1 problem(s)\n"
        f"  - {missing}: cannot read the configuration: No such file or directory\n",
    )


HANDLER_MODULE = "esm_test_handler_that_raises_on_import"


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        (
            '{type: python, handler: "no_such_module_here:handle"}',
            "functions.orders.handler: handler 'no_such_module_here:handle': unable to import "
            "module 'no_such_module_here': ModuleNotFoundError: No module named "
            "'no_such_module_here'",
        ),
        (
            f'{{type: python, handler: "{HANDLER_MODULE}:handle"}}',
            f"functions.orders.handler: handler '{HANDLER_MODULE}:handle': unable to import "
            f"module '{HANDLER_MODULE}': RuntimeError: no database",
        ),
        (
            '{type: python, handler: "json:no_such_function"}',
            "functions.orders.handler: handler 'json:no_such_function': module 'json' has no "
            "attribute 'no_such_function'",
        ),
        (
            "{type: command, command: no-such-program-for-esm --flag}",
            "functions.orders.command: cannot run 'no-such-program-for-esm': not found on the PATH",
        ),
        (
            "{type: command, command: [./missing.sh]}",
            "functions.orders.command: cannot run './missing.sh': no such file",
        ),
        (
            "{type: command, command: [./not-executable.sh]}",
            "functions.orders.command: cannot run './not-executable.sh': "
            "{tmp}/not-executable.sh is not executable (chmod +x?)",
        ),
        (
            "{type: command, command: [./], mode: persistent}",
            "functions.orders.command: cannot run './': {tmp} is a directory",
        ),
        (
            "{type: command, command: [sh], cwd: /no/such/dir}",
            "functions.orders.cwd: '/no/such/dir' is not a directory",
        ),
        (
            '{type: http, url: "http://127.0.0.1:8080/", headers: {X-Key: {env: ESM_NO_SUCH_VAR}}}',
            "functions.orders: header 'X-Key': environment variable 'ESM_NO_SUCH_VAR' is not set",
        ),
    ],
)
def test_functions_that_cannot_start_fail_validation_and_run_alike(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    function: str,
    expected: str,
) -> None:
    (tmp_path / f"{HANDLER_MODULE}.py").write_text("raise RuntimeError('no database')\n")
    (tmp_path / "not-executable.sh").write_text("#!/bin/sh\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    text = GOOD.replace('{type: http, url: "http://127.0.0.1:8080/"}', function)
    text += "admin:\n  enabled: false\nstate:\n  backend: memory\n"

    code, err = _both(["-c", _write(tmp_path, text)], capsys)

    assert code == 1
    assert err.splitlines() == [
        "configuration invalid: 1 problem(s)",
        "  - " + expected.format(tmp=tmp_path),
    ]


def test_commands_and_handlers_that_can_start_pass_validation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "bin" / "handler.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\ncat\n")
    script.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    text = GOOD.replace(
        'orders: {type: http, url: "http://127.0.0.1:8080/"}',
        "orders: {type: command, command: bin/handler.sh}\n"
        "  on-path: {type: command, command: [handler.sh], env: {PATH: bin}}\n"
        "  shell: {type: command, command: sh -c cat, cwd: bin}\n"
        '  local: {type: python, handler: "esm.examples.handlers:handle"}',
    )

    assert main(["validate", "-c", _write(tmp_path, text)]) == 0, capsys.readouterr().err


@pytest.fixture
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.mark.usefixtures("_restore_logging")
def test_run_names_the_admin_setting_when_its_address_cannot_be_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        text = GOOD + (
            f"admin: {{listen: '{listen}'}}\nstate: {{backend: memory}}\n"
            "aws: {endpoint_url: 'http://127.0.0.1:9'}\n"
        )
        assert main(["validate", "-c", _write(tmp_path, text)]) == 0
        capsys.readouterr()

        assert main(["run", "-c", _write(tmp_path, text)]) == 1

    err = capsys.readouterr().err
    assert f"esm: admin.listen: cannot bind {listen}: Address already in use\n" in err
    assert "Traceback" not in err
