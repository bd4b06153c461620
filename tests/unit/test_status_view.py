"""The rows of `esm status`: each column from /status's JSON, and "-" for what an esm of
another version leaves out."""

from __future__ import annotations

from esm.status_view import MappingRow, mapping_rows, render_text, seconds, source_name


def test_sources_are_named_by_service_and_resource() -> None:
    assert source_name("arn:aws:kinesis:us-east-1:123456789012:stream/orders") == "kinesis orders"
    efo = "arn:aws:kinesis:us-east-1:123456789012:stream/orders/consumer/esm:1700000000"
    assert source_name(efo) == "kinesis orders (consumer esm)"
    table = "arn:aws:dynamodb:us-east-1:123456789012:table/carts/stream/2024-01-01T00:00:00.000"
    assert source_name(table) == "dynamodb carts"
    assert source_name("arn:aws:sqs:us-east-1:123456789012:jobs.fifo") == "sqs jobs.fifo"
    assert source_name("") == "-"


def test_ages_read_as_people_say_them() -> None:
    assert [seconds(v) for v in (0.42, 12.4, 185, 7800)] == ["0.4s", "12s", "3m05s", "2h10m"]


def test_a_leased_stream_mapping_shows_owners_lag_and_the_failing_batch() -> None:
    batch = {"records": 7, "last_error": "Unhandled: boom"}
    status = {
        "mappings": [
            {
                "name": "orders",
                "function": "fn",
                "event_source_arn": "arn:aws:kinesis:us-east-1:123456789012:stream/orders",
                "enabled": True,
                "ready": True,
                "shards": {
                    "shardId-0": {"phase": "reading", "iterator_age_seconds": 3.5,
                                  "in_flight": [batch], "lease": {"owner": "a", "counter": 4}},
                    "shardId-1": {"phase": "finished", "iterator_age_seconds": 61,
                                  "in_flight": [], "lease": {"owner": "b", "counter": 9}},
                    "shardId-2": {"phase": "waiting", "lease": {"owner": None, "counter": 0}},
                },
            }
        ]
    }  # fmt: skip
    assert mapping_rows(status) == [
        MappingRow(
            mapping="orders",
            source="kinesis orders",
            function="fn",
            state="running",
            units="3 shards (1 finished, 1 reading, 1 waiting)",
            owner="a 1, b 1, free 1",
            lag="age 1m01s",
            in_flight="1 (7 records)",
            last_error="shardId-0: Unhandled: boom",
        )
    ]


def test_a_queue_mapping_and_a_disabled_one() -> None:
    status = {
        "ready": False,
        "uptime_seconds": 4,
        "mappings": [
            {"name": "jobs", "event_source_arn": "arn:aws:sqs:us-east-1:123456789012:jobs",
             "ready": False, "pollers": {"running": 2, "target": 5}, "batches_in_flight": 1,
             "backlog": {"visible": 40}, "last_error": "AccessDenied"},
            {"name": "old", "enabled": False},
        ],
    }  # fmt: skip
    jobs, old = mapping_rows(status)
    assert (jobs.state, jobs.units, jobs.lag, jobs.in_flight, jobs.last_error) == (
        "starting", "2/5 pollers", "40 visible", "1", "AccessDenied",
    )  # fmt: skip
    assert old == MappingRow("old", "-", "-", "disabled", "-", "-", "-", "-", "-")
    text = render_text(status, width=40)
    assert text.startswith("esm not ready, up 4.0s, 2 mappings\n\nmapping")
    assert all(len(line) <= 40 for line in text.splitlines())


def test_nothing_to_show_is_one_line() -> None:
    assert render_text({"ready": True, "mappings": []}) == "esm ready, 0 mappings"


def test_a_circuit_breaker_that_is_open_or_probing_shows_as_the_state() -> None:
    def state(circuit: str) -> str:
        entry = {"name": "m", "ready": True, "circuit_breaker": {"state": circuit}}
        (row,) = mapping_rows({"ready": True, "mappings": [entry]})
        return row.state

    assert [state(s) for s in ("open", "half_open", "closed")] == [
        "circuit open",
        "probing",
        "running",
    ]
