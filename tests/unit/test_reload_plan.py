"""What a reload changes, decided from the old and the new configuration alone."""

from __future__ import annotations

import pytest

from esm.config import EsmConfig, parse_config
from esm.reload_plan import ReloadRefused, plan_reload

STREAM = "arn:aws:kinesis:us-east-1:123456789012:stream/orders"
QUEUE = "arn:aws:sqs:us-east-1:123456789012:jobs"


def config(
    *,
    url: str = "http://127.0.0.1:8080/",
    batch: int = 10,
    queue_enabled: bool = True,
    extra: str = "",
    grace: int = 30,
) -> EsmConfig:
    return parse_config(
        f"""
delivery:
  shutdown_grace_seconds: {grace}
{extra}
functions:
  fn:
    type: http
    url: {url}
  other:
    type: http
    url: http://127.0.0.1:8081/
mappings:
  - FunctionName: fn
    EventSourceArn: {STREAM}
    StartingPosition: LATEST
    BatchSize: {batch}
  - FunctionName: other
    EventSourceArn: {QUEUE}
    Enabled: {str(queue_enabled).lower()}
""",
        environ={},
    )


def ids(cfg: EsmConfig) -> tuple[str, str]:
    stream, queue = cfg.mappings
    return stream.mapping_id, queue.mapping_id


def test_the_same_configuration_changes_nothing() -> None:
    plan = plan_reload(config(), config())
    assert plan.empty
    assert sorted(plan.unchanged) == sorted(ids(config()))


def test_a_mapping_of_its_own_restarts_alone() -> None:
    stream, queue = ids(config())
    plan = plan_reload(config(), config(batch=50))
    assert (plan.changed, plan.unchanged, plan.added, plan.removed) == ([stream], [queue], [], [])


def test_a_function_change_restarts_the_mappings_that_call_it() -> None:
    stream, queue = ids(config())
    plan = plan_reload(config(), config(url="http://127.0.0.1:9090/"))
    assert (plan.changed, plan.unchanged, plan.functions) == ([stream], [queue], ["fn"])


def test_a_shared_section_restarts_every_mapping() -> None:
    plan = plan_reload(config(), config(grace=5))
    assert sorted(plan.changed) == sorted(ids(config()))


def test_disabling_removes_and_enabling_adds() -> None:
    _, queue = ids(config())
    assert plan_reload(config(), config(queue_enabled=False)).removed == [queue]
    assert plan_reload(config(queue_enabled=False), config()).added == [queue]


@pytest.mark.parametrize(
    ("extra", "section"),
    [
        ("state:\n  backend: memory", "state"),
        ("admin:\n  listen: 127.0.0.1:9999", "admin"),
        ("aws:\n  region: eu-west-1", "aws"),
        ("log:\n  level: debug", "log"),
    ],
)
def test_a_fixed_section_is_refused(extra: str, section: str) -> None:
    with pytest.raises(ReloadRefused) as refused:
        plan_reload(config(), config(extra=extra))
    assert str(refused.value) == (
        f"reload cannot change {section}: restart esm for that; nothing was changed"
    )
