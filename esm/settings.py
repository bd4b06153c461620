"""What every configuration model shares: the strict base, a problem, a value shown short.

Plugin modules (sources, backends, destinations, checkpoint stores) declare their settings on these
bases, so they need neither `esm.config` (the whole file) nor each other. Ranges are written
as `Field(ge=, le=, gt=, lt=)`; `range_text` turns them into the words `esm validate` prints
and the configuration reference shows, so a range is stated once.
"""

from __future__ import annotations

import ipaddress
import re
import reprlib
from typing import Any, ClassVar, Literal, Self
from urllib.parse import urlsplit

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from esm.redact import redact

__all__ = [
    "ACCOUNT",
    "REGION",
    "ConfigModel",
    "DestinationSettings",
    "FunctionSettings",
    "SourceSettings",
    "StateSettings",
    "bounds",
    "config_problem",
    "host_problem",
    "range_text",
    "show",
    "url_problem",
]

REGION = re.compile(r"(?:eusc-)?[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-\d")
ACCOUNT = re.compile(r"\d{12}")
# Underscores are not in the RFCs, but container runtimes resolve names that have them.
_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


class ConfigModel(BaseModel):
    """A section or a plugin's settings."""

    # strict: YAML already gives real types, so "yes", "10" or 1.5 must not pass as bool/int.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def config_problem(*lines: str, at: str | None = None) -> PydanticCustomError:
    """A validation error whose lines become separate problems; `at` names the key inside
    the validated object the problem is about, when a validator of the whole object finds it."""
    context = {"message": "\n".join(lines)}
    if at is not None:
        context["at"] = at
    return PydanticCustomError("esm_config", "{message}", context)


class _ShortRepr(reprlib.Repr):
    """repr() that stops early: a value can be huge or deeply nested (YAML aliases make both
    cheap to write), and only its first 120 characters are shown."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 4
        self.maxdict = self.maxlist = self.maxtuple = self.maxset = 8
        self.maxstring = self.maxother = 400

    def repr_dict(self, x: dict[Any, Any], level: int) -> str:
        # In the order the user wrote the keys (reprlib sorts them).
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        items = [
            f"{self.repr1(key, level - 1)}: {self.repr1(value, level - 1)}"
            for key, value in list(x.items())[: self.maxdict]
        ]
        if len(x) > self.maxdict:
            items.append("...")
        return "{" + ", ".join(items) + "}"


_REPR = _ShortRepr()


def show(value: Any) -> str:
    """A value as the user wrote it in YAML, short and on one line."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, float) and value.is_integer():
        # Strict floats still take YAML integers; show 5 as the user wrote it, not 5.0.
        text = str(int(value))
    else:
        text = _REPR.repr(value)
    text = redact(text)
    return text if len(text) <= 120 else text[:117] + "..."


def url_problem(value: str) -> str | None:
    """Why `value` is not an http(s) URL, or None when it is one."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"{show(value)} is not an http:// or https:// URL"
    return None


def host_problem(host: str) -> str | None:
    """Why `host` is neither an IP address nor a host name, or None when it is one."""
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"{host!r} is not an IPv6 address"
        return None
    if all(part.isdigit() for part in host.split(".")):
        # All digits and dots: only an IPv4 address can look like that (no TLD is numeric).
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"{host!r} is not an IPv4 address"
        return None
    labels = host.removesuffix(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        return f"{host!r} is not a host name or IP address"
    return None


# --------------------------------------------------------------------------- ranges

_UNIT_KEY = "unit"


def _number(value: Any) -> str:
    return show(value)


def bounds(field: FieldInfo) -> dict[str, Any]:
    """The field's range constraints by name (ge, gt, le, lt) and its unit, if any."""
    found: dict[str, Any] = {}
    for item in field.metadata:
        if isinstance(item, Ge):
            found["ge"] = item.ge
        elif isinstance(item, Gt):
            found["gt"] = item.gt
        elif isinstance(item, Le):
            found["le"] = item.le
        elif isinstance(item, Lt):
            found["lt"] = item.lt
    extra = field.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get(_UNIT_KEY), str):
        found[_UNIT_KEY] = extra[_UNIT_KEY]
    return found


def range_text(field: FieldInfo) -> str | None:
    """The allowed range in words ("between 1 and 10", "greater than 0 and at most 900
    seconds"), or None when the field has no range."""
    limits = bounds(field)
    unit = f" {limits['unit']}" if "unit" in limits else ""
    low = f"between {_number(limits['ge'])} and" if "ge" in limits and "le" in limits else None
    if low is not None:
        return f"{low} {_number(limits['le'])}{unit}"
    parts = []
    if "ge" in limits:
        parts.append(f"at least {_number(limits['ge'])}")
    if "gt" in limits:
        parts.append(f"greater than {_number(limits['gt'])}")
    if "le" in limits:
        parts.append(f"at most {_number(limits['le'])}")
    if "lt" in limits:
        parts.append(f"less than {_number(limits['lt'])}")
    return " and ".join(parts) + unit if parts else None


def unit(name: str) -> dict[str, Any]:
    """`json_schema_extra` naming a field's unit: shown in messages and in the reference."""
    return {_UNIT_KEY: name}


# --------------------------------------------------------------------------- functions


class FunctionSettings(ConfigModel):
    """What every function has, whatever runs it. A backend's settings extend this with a
    `type: Literal["name"]` field (the name it is registered under) and its own keys."""

    offline_checked_setting: ClassVar[str | None] = None
    """The setting that start-up problems of this backend come from (a handler that does not
    import), named in the problem's path; None: the function itself."""

    type: str
    timeout: float = Field(
        3.0,
        gt=0,
        le=900,
        description="Like a Lambda function's timeout (Lambda's default is 3 s): an "
        "invocation that takes longer is a function error.",
        json_schema_extra=unit("seconds"),
    )
    memory_size: int = Field(
        128,
        ge=128,
        le=10240,
        description="Reported to the function as its memory limit, as Lambda's context does.",
        json_schema_extra=unit("MB"),
    )
    max_concurrency: int | None = Field(
        None,
        ge=1,
        le=10000,
        description="Invocations of this function at once across every mapping that uses it "
        "(Lambda's reserved concurrency); batches over the limit wait, counted in "
        "esm_function_waiting_batches, instead of failing. SQS mappings of the function run "
        "no more pollers than this. Unset: no limit.",
    )

    def target(self) -> str:
        """What the function runs, in a few words, for `esm validate`'s summary."""
        return ""

    def functions_called(self) -> tuple[tuple[str, str], ...]:
        """Other functions of the file that this one hands invocations to, each with the
        setting that names it: `(setting, function)`."""
        return ()

    def offline_problems(self, name: str) -> list[str]:
        """Problems start-up would find that building the backend does not (a program that
        is not installed), each a whole line with its setting's path."""
        return []


# --------------------------------------------------------------------------- state, destinations


class StateSettings(ConfigModel):
    """A checkpoint store's settings: `state.backend` names the store, the rest is its own."""

    backend: str

    def summary(self) -> str:
        """Where checkpoints go, in a few words, for `esm validate`'s summary."""
        return self.backend


class DestinationSettings(ConfigModel):
    """An on-failure destination: the ARN of a queue, topic or bucket of one service."""

    arn_form: ClassVar[str] = ""
    """What the ARN looks like, for the problem that lists every kind of destination."""

    arn: str = Field(description="The destination's ARN.")

    @classmethod
    def arn_problem(cls, arn: str, region: str, account: str, resource: str) -> str | None:
        """Why `arn` (already split) cannot be such a destination, or None when it can."""
        return None


class SourceSettings(ConfigModel):
    """An event source: its EventSourceArn taken apart, and the rules its kind puts on a
    mapping's parameters.

    The class variables are the kind's rules; an instance is one ARN (`from_resource` builds
    it). The configuration checks every mapping parameter through these, so it names no
    source kind, and the daemon runs the source on the engine its `engine` names.
    """

    kind: ClassVar[str] = ""
    """The name it is registered under: the service of its ARNs (arn:aws:SERVICE:...)."""
    title: ClassVar[str] = ""
    """The service's name in messages ("Kinesis")."""
    description: ClassVar[str] = ""
    """What such a source is, with its article ("a Kinesis stream")."""
    arn_form: ClassVar[str] = ""
    """What its ARN looks like, for the problem that lists every kind of source."""
    engine: ClassVar[Literal["stream", "queue"]] = "stream"
    """How esm reads it: shards with checkpoints, or a queue whose messages are deleted."""
    default_batch_size: ClassVar[int] = 100
    """AWS's BatchSize when a mapping gives none."""
    starting_positions: ClassVar[tuple[str, ...]] = ()
    """The StartingPosition values it takes; empty when it has none (and takes none)."""
    record_form: ClassVar[Literal["kinesis", "dynamodb", "sqs"]] = "kinesis"
    """The shape of its event records: what FilterCriteria patterns match against and, for
    streams, the form of on-failure records."""
    failures_note: ClassVar[str] = ""
    """Where a queue source's failed records go instead of an on-failure destination."""

    arn: str = Field(description="The EventSourceArn.")
    partition: str = Field(description="The ARN's partition (aws, aws-cn, aws-us-gov).")
    region: str
    account: str
    name: str = Field(description="The stream, table or queue name in the ARN.")

    @classmethod
    def from_resource(
        cls, arn: str, partition: str, region: str, account: str, resource: str
    ) -> Self:
        """The source of `arn`, whose region and account are checked already and whose
        resource part (after the account) is `resource`.

        :raises ValueError: saying what the ARN should look like.
        """
        return cls(arn=arn, partition=partition, region=region, account=account, name=resource)

    @property
    def fifo(self) -> bool:
        """Whether records come in order per message group (SQS FIFO queues)."""
        return False

    @property
    def stream_arn(self) -> str:
        """The ARN of the stream itself (a Kinesis consumer ARN names its stream's)."""
        return self.arn

    @property
    def takes_timestamp(self) -> bool:
        """Whether StartingPosition AT_TIMESTAMP (and so StartingPositionTimestamp) applies."""
        return "AT_TIMESTAMP" in self.starting_positions

    def describe(self) -> str:
        """What this source is, with its article, as messages say it."""
        return self.description

    def batch_size_problem(self, batch_size: int) -> str | None:
        """Why `batch_size` is out of range for this source beyond AWS's 1 to 10,000."""
        return None

    def window_problem(self, window: int, batch_size: int | None) -> str | None:
        """Why MaximumBatchingWindowInSeconds `window` (0 to 300 already) cannot be used
        with this source and the mapping's BatchSize."""
        return None
