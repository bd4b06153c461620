"""The daemon labels every metric with the mapping's name, and says which mapping it is."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from esm.testing import RecordingBackend

from .helpers import create_stream, daemon_config, put_records, run_daemon_until

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_metrics_and_status_use_the_mapping_name(
    kinesis: Any, moto_endpoint: str, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    await put_records(kinesis, stream_name, 10)
    backend = RecordingBackend()
    config = daemon_config(moto_endpoint, arn, extra_mapping="    name: orders-reader")
    daemon = await run_daemon_until(config, backend, lambda: len(backend.delivered_records()) >= 10)
    mapping = config.mappings[0]
    assert mapping.mapping_name == "orders-reader"

    text = generate_latest(daemon.metrics.registry).decode()
    labelled = {
        sample.name: sample.labels["mapping"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "mapping" in sample.labels
    }
    assert labelled["esm_polled_events_total"] == "orders-reader"
    assert labelled["esm_concurrent_invocations"] == "orders-reader"
    assert set(labelled.values()) == {"orders-reader"}, "no series is labelled with the UUID"
    info = [
        sample.labels
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "esm_mapping_info"
    ]
    assert info == [
        {
            "mapping": "orders-reader",
            "uuid": mapping.mapping_id,
            "function": "fn",
            "event_source_arn": arn,
            "source": "kinesis",
        }
    ]
    [status] = daemon.status()["mappings"]
    assert (status["id"], status["name"]) == (mapping.mapping_id, "orders-reader")
    [invocation, *_] = backend.invocations
    assert invocation.extra["mapping"] == "orders-reader"
