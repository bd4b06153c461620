"""`esm demo`, the README's first command, runs on a fresh install and shows its summary."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_demo_processes_every_record_and_prints_a_summary() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "esm",
            "demo",
            "--records",
            "120",
            "--shards",
            "3",
            "--messages",
            "30",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "wrote 120 records" in out
    assert "records written    120" in out
    assert "records delivered  120" in out
    assert out.count("checkpoint shardId-") == 3
    assert "messages sent      30" in out
    assert "messages deleted   30" in out
