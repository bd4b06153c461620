"""The `tracing:` section and the OTEL_* variables: when traces are on, what is refused, and
the one line esm says when traces are on without the tracing extra."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from esm.cli import main
from esm.config import EsmConfig, describe_config, parse_config
from esm.daemon import Daemon
from esm.errors import ConfigError, SettingError
from esm.preflight import check_tracing
from esm.tracing import NO_TRACING, TracingSettings

pytestmark = pytest.mark.anyio

BASE = """
functions:
  fn: {type: http, url: "http://127.0.0.1:8080/"}
mappings:
  - FunctionName: fn
    EventSourceArn: arn:aws:sqs:us-east-1:123456789012:jobs
"""


def _config(section: str = "", environ: dict[str, str] | None = None) -> EsmConfig:
    return parse_config(BASE + section, environ=environ or {})


def _problems(section: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        _config(section, environ)
    return caught.value.problems


def test_tracing_is_off_unless_asked_for() -> None:
    tracing = _config().tracing
    assert not tracing.enabled
    assert tracing.settings() == TracingSettings()
    assert describe_config(_config()).endswith("tracing: off")


def test_the_section_sets_the_tracer() -> None:
    config = _config(
        """
tracing:
  enabled: true
  exporter: otlp
  endpoint: http://collector:4318
  service_name: orders-esm
  sample_ratio: 0.25
"""
    )
    assert config.tracing.settings() == TracingSettings(
        exporter="otlp",
        endpoint="http://collector:4318",
        service_name="orders-esm",
        sample_ratio=0.25,
    )
    assert describe_config(config).endswith(
        "tracing: on, otlp to http://collector:4318, sample ratio 0.25"
    )


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_SERVICE_NAME": "esm"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, False),
    ],
)
def test_otel_variables_turn_traces_on_when_the_file_does_not_say(
    environ: dict[str, str], on: bool
) -> None:
    assert _config(environ=environ).tracing.enabled is on
    # The file has the last word.
    assert not _config("tracing: {enabled: false}", environ).tracing.enabled


def test_otel_traces_exporter_picks_the_exporter_unless_the_file_does() -> None:
    environ = {"OTEL_TRACES_EXPORTER": "console,otlp"}
    assert _config(environ=environ).tracing.exporter == "console"
    assert _config("tracing: {exporter: none}", environ).tracing.exporter == "none"


@pytest.mark.parametrize(
    ("section", "environ", "fragment"),
    [
        ("tracing: {exporter: jaeger}", {}, "tracing.exporter: must be 'otlp', 'console' or"),
        ("tracing: {endpoint: collector:4318}", {}, "tracing.endpoint: 'collector:4318' is not"),
        ("tracing: {sample_ratio: 1.5}", {}, "tracing.sample_ratio: 1.5 is out of range"),
        ("tracing: {service_name: ''}", {}, "tracing.service_name"),
        ('tracing: {enabled: "yes"}', {}, "tracing.enabled: must be a valid boolean"),
        ("tracing: {sampler: always_on}", {}, "tracing: unknown key 'sampler'"),
        ("", {"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER='zipkin': esm exports"),
        (
            "tracing: {enabled: true}",
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL=grpc: esm sends OTLP over HTTP",
        ),
    ],
)
def test_what_the_section_refuses(section: str, environ: dict[str, str], fragment: str) -> None:
    problems = _problems(section, environ)
    assert any(fragment in problem for problem in problems), problems


@pytest.fixture
def without_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the tracing extra were not installed: importing opentelemetry fails."""
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.delitem(sys.modules, "esm.tracing_otel", raising=False)


@pytest.mark.usefixtures("without_the_extra")
def test_traces_on_without_the_extra_is_one_problem_before_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "esm.yaml"
    path.write_text(BASE + "tracing: {enabled: true}\n")
    for command in ("validate", "run"):
        assert main([command, "-c", str(path)]) == 1
        err = capsys.readouterr().err
        lines = err.splitlines()
        assert lines[0] == "configuration invalid: 1 problem(s)"
        assert len(lines) == 2, err
        assert lines[1].startswith("  - tracing.enabled: traces are on")
        assert "OpenTelemetry is not installed" in lines[1]
        assert "pip install 'esm[tracing]'" in lines[1]
        assert "Traceback" not in err


@pytest.mark.usefixtures("without_the_extra")
def test_tracing_off_without_the_extra_is_fine() -> None:
    assert check_tracing(_config()) == []


@pytest.mark.usefixtures("without_the_extra")
async def test_a_daemon_with_traces_on_without_the_extra_refuses_to_start() -> None:
    daemon = Daemon(_config("tracing: {enabled: true}"))
    with pytest.raises(SettingError, match=r"^tracing: traces are on but OpenTelemetry is not"):
        await daemon.run(handle_signals=False)
    assert daemon.tracing is NO_TRACING
