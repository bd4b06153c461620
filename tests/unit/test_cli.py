"""The command line: validate's output and exit codes, run's handling of bad settings."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def test_run_refuses_an_invalid_configuration_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = GOOD.replace("BatchSize: 500", "BatchSize: 0")
    assert main(["run", "-c", _write(tmp_path, bad)]) == 2
    assert "BatchSize" in capsys.readouterr().err


def test_run_reports_a_handler_that_does_not_import_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = GOOD.replace(
        '{type: http, url: "http://127.0.0.1:8080/"}',
        '{type: python, handler: "no_such_module_here:handle"}',
    )
    text += "admin:\n  enabled: false\nstate:\n  backend: memory\n"
    assert main(["run", "-c", _write(tmp_path, text)]) == 1
    err = capsys.readouterr().err
    assert "BackendError" in err
    assert "no_such_module_here" in err
    assert "Traceback" not in err
