"""Without AWS credentials, esm against an emulator keeps running and says once what to set."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from esm.aws import errors as _aws
from esm.aws.errors import CREDENTIALS_HINT
from esm.metrics import Metrics
from esm.testing import RecordingBackend

from .helpers import create_stream, daemon_config, run_daemon_until

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

# Every place botocore looks for credentials, emptied.
_CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


async def test_missing_credentials_give_one_hint_and_reads_keep_being_retried(
    kinesis: Any,
    moto_endpoint: str,
    stream_name: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    for name in _CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(_aws, "_hints_given", set())
    config = daemon_config(moto_endpoint, arn)
    mapping = config.mappings[0].mapping_name
    metrics = Metrics()
    failures = metrics.read_errors.labels(mapping, "list_shards")

    with capture_logs() as logs:
        daemon = await run_daemon_until(
            config, RecordingBackend(), lambda: failures._value.get() >= 3, metrics=metrics
        )

    hints = [entry for entry in logs if entry["event"] == CREDENTIALS_HINT]
    assert len(hints) == 1
    listing = [entry for entry in logs if entry["event"] == "listing shards failed"]
    assert len(listing) >= 3
    assert {entry["error"] for entry in listing} == {"ListShards: no AWS credentials found"}
    assert daemon.status()["mappings"][0]["ready"] is False
