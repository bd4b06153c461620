"""Start-up's choice of tracing: the OpenTelemetry one when traces are on and the `tracing`
extra is installed, a one-line error when it is not.

Kept out of esm.tracing, the interface the engine uses, so that nothing of the engine can
reach OpenTelemetry, even through a lazy import.
"""

from __future__ import annotations

from typing import Final

from esm.errors import SettingError, describe
from esm.tracing import Tracing, TracingSettings

INSTALL_HINT: Final = "pip install 'esm[tracing]'"


def missing_extra() -> str | None:
    """Why OpenTelemetry tracing cannot start (the extra is not installed), or None."""
    try:
        import esm.tracing_otel  # noqa: F401 - imported to know whether it can be
    except ImportError as exc:
        return f"OpenTelemetry is not installed ({exc}): {INSTALL_HINT}"
    return None


def open_tracing(settings: TracingSettings) -> Tracing:
    """The OpenTelemetry tracing `settings` describe, exporting from a thread of its own.

    :raises SettingError: OpenTelemetry is not installed, or refuses the settings.
    """
    problem = missing_extra()
    if problem is not None:
        raise SettingError(f"tracing: traces are on but {problem}")
    from esm.tracing_otel import OtelTracing

    try:
        return OtelTracing.from_settings(settings)
    except Exception as exc:  # noqa: BLE001 - the SDK reads OTEL_* variables it may refuse
        raise SettingError(f"tracing: OpenTelemetry cannot start: {describe(exc)}") from None
