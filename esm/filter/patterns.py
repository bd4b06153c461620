"""FilterCriteria: Lambda event filtering (EventBridge patterns), compiled once per mapping."""

from __future__ import annotations

import binascii
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal, TypeGuard

import orjson

from esm.errors import ConfigError

__all__ = [
    "MAX_FILTERS",
    "MAX_PATTERN_CHARS",
    "OPERATORS",
    "FilterSource",
    "RecordFilter",
    "compile_filters",
]

FilterSource = Literal["kinesis", "dynamodb", "sqs"]

# AWS's default quota of filters per mapping, and the API's limit on one Pattern.
MAX_FILTERS: Final = 5
MAX_PATTERN_CHARS: Final = 4096
# esm's own bound: compiling and matching recurse once per level, and 4096 characters can
# nest deeper than Python's stack allows. Real patterns nest a few levels.
MAX_PATTERN_DEPTH: Final = 100

# The operators Lambda's filter rule syntax lists. EventBridge buses also know `wildcard` and
# `cidr`, but Lambda's table does not list them and EventBridge Pipes (the same filtering as
# Lambda mappings) marks wildcard unsupported, so they are refused rather than half-supported.
OPERATORS: Final = ("anything-but", "equals-ignore-case", "exists", "numeric", "prefix", "suffix")
_UNSUPPORTED = {
    "wildcard": "Lambda event filtering does not support wildcard (only EventBridge buses do)",
    "cidr": "Lambda event filtering does not support cidr (only EventBridge buses do)",
}
_LOWER_BOUNDS = (">", ">=")
_UPPER_BOUNDS = ("<", "<=")


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


# A field the record does not have (distinct from a JSON null).
_MISSING: Final = _Sentinel("MISSING")
# The payload (Kinesis data, SQS body) is not JSON: patterns on its fields never match.
_NOT_JSON: Final = _Sentinel("NOT_JSON")
# The payload has not been decoded yet (decoding waits until a filter needs it).
_UNDECODED: Final = _Sentinel("UNDECODED")
_EMPTY: Final[Mapping[str, Any]] = {}

# A test of the value found at one field (or _MISSING).
_FieldTest = Callable[[Any], bool]
# A test of a JSON object against an object pattern.
_ObjectTest = Callable[[Mapping[str, Any]], bool]
# A test of a whole record: the Lambda-format entry and its decoded payload (or a sentinel).
_RecordTest = Callable[[Mapping[str, Any], Any], bool]
_Decoder = Callable[[Mapping[str, Any]], Any]


class RecordFilter:
    """The compiled FilterCriteria of one mapping: a record passes if ANY filter matches it.

    With no filters every record passes. Filters that do not look at the payload (Kinesis
    `data`, SQS `body`) are tried first; the payload is decoded at most once per record, and
    only when a filter whose other conditions already hold needs it.
    """

    __slots__ = ("_decode", "_metadata_only", "_needs_payload", "patterns", "source")

    def __init__(
        self,
        source: FilterSource,
        patterns: tuple[str, ...],
        metadata_only: tuple[_RecordTest, ...],
        needs_payload: tuple[tuple[_RecordTest | None, _RecordTest], ...],
        decode: _Decoder,
    ) -> None:
        self.source = source
        self.patterns = patterns
        self._metadata_only = metadata_only
        self._needs_payload = needs_payload
        self._decode = decode

    def __len__(self) -> int:
        return len(self.patterns)

    def __repr__(self) -> str:
        return f"RecordFilter(source={self.source!r}, filters={len(self.patterns)})"

    def matches(self, entry: Mapping[str, Any]) -> bool:
        """Whether the record (as the function would see it in the event) passes the filters."""
        if not self.patterns:
            return True
        for test in self._metadata_only:
            if test(entry, _UNDECODED):
                return True
        payload: Any = _UNDECODED
        for metadata, payload_test in self._needs_payload:
            # The metadata half is cheap: when it fails, the payload is never decoded.
            if metadata is not None and not metadata(entry, _UNDECODED):
                continue
            if payload is _UNDECODED:
                payload = self._decode(entry)
            if payload_test(entry, payload):
                return True
        return False


def compile_filters(patterns: Sequence[str], *, source: FilterSource) -> RecordFilter:
    """Compile the `Pattern` strings of a mapping's filters; ConfigError lists every problem."""
    if source not in _DATA_KEY:
        raise ConfigError(
            [f"filters: unknown event source {source!r}: expected one of kinesis, dynamodb, sqs"]
        )
    problems: list[str] = []
    if len(patterns) > MAX_FILTERS:
        problems.append(
            f"Filters: {len(patterns)} filters given, at most {MAX_FILTERS} are allowed per mapping"
        )
    metadata_only: list[_RecordTest] = []
    needs_payload: list[tuple[_RecordTest | None, _RecordTest]] = []
    for index, text in enumerate(patterns):
        compiler = _Compiler(source, f"Filters[{index}]")
        compiled = compiler.compile_pattern(text)
        if compiler.problems:
            problems.extend(compiler.problems)
            continue
        if compiled is None:
            continue
        metadata, payload = compiled
        if payload is None:
            assert metadata is not None
            metadata_only.append(metadata)
        else:
            needs_payload.append((metadata, payload))
    if problems:
        raise ConfigError(problems)
    return RecordFilter(
        source,
        tuple(patterns),
        tuple(metadata_only),
        tuple(needs_payload),
        _DECODERS[source],
    )


# ---------------------------------------------------------------------------------------------
# Decoding the payload of a record


def _is_mapping(value: Any) -> TypeGuard[Mapping[str, Any]]:
    # The type test first: an ABC isinstance costs more than the rest of a metadata test.
    return type(value) is dict or isinstance(value, Mapping)


def _decode_kinesis(entry: Mapping[str, Any]) -> Any:
    kinesis = entry.get("kinesis")
    data = kinesis.get("data") if _is_mapping(kinesis) else None
    if type(data) is not str:
        return _NOT_JSON
    try:
        # Not strict_mode: esm wrote this base64 itself, and strict decoding is slower.
        # orjson refuses bytes that are not UTF-8, which is what "not JSON" means here too.
        return orjson.loads(binascii.a2b_base64(data))
    except (ValueError, binascii.Error):
        return _NOT_JSON


def _decode_sqs(entry: Mapping[str, Any]) -> Any:
    body = entry.get("body")
    if not isinstance(body, str):
        return _NOT_JSON
    try:
        return orjson.loads(body)
    except ValueError:
        return _NOT_JSON


def _decode_nothing(entry: Mapping[str, Any]) -> Any:
    return _NOT_JSON


_DECODERS: dict[str, _Decoder] = {
    "kinesis": _decode_kinesis,
    "sqs": _decode_sqs,
    "dynamodb": _decode_nothing,
}
# The key of each source's payload in a pattern. DynamoDB's `dynamodb` object needs no
# decoding, so it is matched like any other key (see _Compiler._top_key).
_DATA_KEY: dict[str, str | None] = {"kinesis": "data", "sqs": "body", "dynamodb": None}


# ---------------------------------------------------------------------------------------------
# Reading patterns


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# What a pattern too deep for the JSON parser itself reads as.
_TOO_DEEP: Final = object()


def _depth(value: Any) -> int:
    """How many objects and arrays deep `value` nests (counted without recursing)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            stack.extend(
                (child, depth + 1) for child in (node.values() if isinstance(node, dict) else node)
            )
    return deepest


def _merge_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # EventBridge flattens a pattern into field paths, so a key written twice with objects
    # under it adds both sets of paths (AWS's DynamoDB "Boolean expressions" example relies
    # on it); for the same path the later value wins.
    merged: dict[str, Any] = {}
    for key, value in pairs:
        old = merged.get(key)
        merged[key] = (
            _deep_merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
        )
    return merged


def _deep_merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    out = dict(old)
    for key, value in new.items():
        before = out.get(key)
        out[key] = (
            _deep_merge(before, value)
            if isinstance(before, dict) and isinstance(value, dict)
            else value
        )
    return out


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(value: Any) -> bool:
    return type(value) is int or (type(value) is float and math.isfinite(value))


def _as_decoded(number: int | float) -> int | float:
    # orjson reads integers beyond 64 bits as floats; a pattern's integer is turned the same
    # way so that it still equals the value read from a record.
    if type(number) is int and not -(2**63) <= number < 2**64:
        try:
            return float(number)
        except OverflowError:
            return number
    return number


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Compiler:
    """Turns one pattern into closures, collecting every problem rather than the first."""

    def __init__(self, source: FilterSource, where: str) -> None:
        self.source = source
        self.where = where
        self.data_key = _DATA_KEY[source]
        self.problems: list[str] = []

    def problem(self, path: str, message: str) -> None:
        at = f" at {path}" if path else ""
        self.problems.append(f"{self.where}{at}: {message}")

    # -- the whole pattern -----------------------------------------------------------------

    def compile_pattern(self, text: str) -> tuple[_RecordTest | None, _RecordTest | None] | None:
        if not isinstance(text, str):
            self.problem("", f"the pattern must be a string of JSON, got {type(text).__name__}")
            return None
        if len(text) > MAX_PATTERN_CHARS:
            self.problem(
                "",
                f"the pattern is {len(text)} characters long, "
                f"at most {MAX_PATTERN_CHARS} are allowed",
            )
            return None
        try:
            pattern = json.loads(
                text, object_pairs_hook=_merge_duplicate_keys, parse_constant=_no_constants
            )
        except ValueError as exc:
            self.problem("", f"the pattern is not valid JSON: {exc}")
            return None
        except RecursionError:
            pattern = _TOO_DEEP
        if pattern is _TOO_DEEP or _depth(pattern) > MAX_PATTERN_DEPTH:
            self.problem("", f"the pattern nests more than {MAX_PATTERN_DEPTH} levels deep")
            return None
        if not isinstance(pattern, dict):
            self.problem(
                "",
                'the pattern must be a JSON object like {"field": ["value"]}, '
                f"got {_show(pattern)}",
            )
            return None
        if not pattern:
            self.problem("", "the pattern is an empty object: it must name at least one field")
            return None
        return self._top_object(pattern, "")

    def _top_object(
        self, pattern: dict[str, Any], path: str
    ) -> tuple[_RecordTest | None, _RecordTest | None]:
        """The (metadata, payload) halves of a top-level object: both must hold."""
        metadata: list[_RecordTest] = []
        payload: list[_RecordTest] = []
        for key, value in pattern.items():
            if key == "$or":
                branches = self._or_branches(value, path)
                if branches is None:
                    continue
                where = _join(path, "$or")
                tests = [
                    self._both(*self._top_object(b, f"{where}[{i}]"))
                    for i, b in enumerate(branches)
                ]
                if all(tests):
                    uses_payload = any(_uses_payload(b, self.data_key) for b in branches)
                    group = _any_record([t for t in tests if t is not None])
                    (payload if uses_payload else metadata).append(group)
                continue
            test = self._top_key(key, value, _join(path, key))
            if test is None:
                continue
            (payload if key == self.data_key else metadata).append(test)
        return _all_records(metadata), _all_records(payload)

    @staticmethod
    def _both(first: _RecordTest | None, second: _RecordTest | None) -> _RecordTest | None:
        return _all_records([t for t in (first, second) if t is not None])

    def _top_key(self, key: str, value: Any, path: str) -> _RecordTest | None:
        if key == self.data_key:
            return self._payload_key(key, value, path)
        if self.source == "dynamodb" and key == "dynamodb":
            return self._dynamodb_key(value, path)
        if (
            self.source == "kinesis"
            and key == "kinesis"
            and isinstance(value, dict)
            and "data" in value
        ):
            self.problem(
                _join(path, "data"),
                'match the record\'s data with a top-level "data" key, which sees the decoded '
                "JSON; kinesis.data is the base64 text",
            )
            return None
        field = self._field(value, path)
        if field is None:
            return None
        if self.source == "kinesis":
            return _kinesis_metadata(key, field)
        return _metadata(key, field)

    def _payload_key(self, key: str, value: Any, path: str) -> _RecordTest | None:
        if isinstance(value, list) and self.source == "kinesis":
            # Lambda's JSON-format table for streams: a non-JSON pattern for the data
            # properties is refused when the mapping is created or updated.
            self.problem(
                path,
                "Kinesis filters must match data as JSON: use an object such as "
                '{"data": {"field": ["value"]}}; a pattern on data as a plain string is refused',
            )
            return None
        if isinstance(value, list):
            leaf = self._leaf(value, path)
            if leaf is None:
                return None

            # SQS: a plain-string pattern applies to a body that is not JSON; a JSON body
            # does not match it (Lambda drops the message).
            def plain_body(entry: Mapping[str, Any], payload: Any) -> bool:
                if payload is not _NOT_JSON:
                    return False
                body = entry.get(key, _MISSING)
                return type(body) is str and leaf(body)

            return plain_body
        if not isinstance(value, dict):
            self._field(value, path)  # reports the problem
            return None
        obj = self._object(value, path)
        if obj is None:
            return None
        nested = _nested_field(obj)

        def json_payload(entry: Mapping[str, Any], payload: Any) -> bool:
            # An object payload is the common case: test it without the array handling.
            if type(payload) is dict:
                return obj(payload)
            return payload is not _NOT_JSON and nested(payload)

        return json_payload

    def _dynamodb_key(self, value: Any, path: str) -> _RecordTest | None:
        if not isinstance(value, dict):
            self.problem(
                path,
                "DynamoDB filters must match the dynamodb object with an object pattern, such as "
                '{"dynamodb": {"NewImage": {"status": {"S": ["shipped"]}}}}',
            )
            return None
        obj = self._object(value, path)
        if obj is None:
            return None

        def dynamodb(entry: Mapping[str, Any], payload: Any) -> bool:
            image = entry.get("dynamodb")
            return _is_mapping(image) and obj(image)

        return dynamodb

    def _or_branches(self, value: Any, path: str) -> list[dict[str, Any]] | None:
        where = _join(path, "$or")
        if not isinstance(value, list) or len(value) < 2:
            self.problem(
                where, f"$or takes a list of at least 2 pattern objects, got {_show(value)}"
            )
            return None
        good = True
        for i, branch in enumerate(value):
            if not isinstance(branch, dict) or not branch:
                self.problem(
                    f"{where}[{i}]",
                    f"each $or entry must be a non-empty object, got {_show(branch)}",
                )
                good = False
        return value if good else None

    # -- nested objects and fields ------------------------------------------------------------

    def _object(self, pattern: dict[str, Any], path: str) -> _ObjectTest | None:
        if not pattern:
            self.problem(path, "empty objects are not allowed in a pattern")
            return None
        fields: list[tuple[str, _FieldTest]] = []
        groups: list[list[_ObjectTest]] = []
        ok = True
        for key, value in pattern.items():
            if key == "$or":
                branches = self._or_branches(value, path)
                if branches is None:
                    ok = False
                    continue
                tests: list[_ObjectTest] = []
                for i, branch in enumerate(branches):
                    branch_test = self._object(branch, f"{_join(path, '$or')}[{i}]")
                    if branch_test is None:
                        ok = False
                    else:
                        tests.append(branch_test)
                groups.append(tests)
                continue
            field = self._field(value, _join(path, key))
            if field is None:
                ok = False
            else:
                fields.append((key, field))
        if not ok:
            return None
        return _all_fields(fields, groups)

    def _field(self, value: Any, path: str) -> _FieldTest | None:
        if isinstance(value, dict):
            obj = self._object(value, path)
            return None if obj is None else _nested_field(obj)
        if isinstance(value, list):
            return self._leaf(value, path)
        self.problem(
            path,
            f"a field's pattern must be a list of values or an object, got {_show(value)} "
            f"(EventBridge needs a list even for one value: [{_show(value)}])",
        )
        return None

    # -- leaves: a list of alternatives ----------------------------------------------------

    def _leaf(self, alternatives: list[Any], path: str) -> _FieldTest | None:
        if not alternatives:
            self.problem(path, "empty lists are not allowed: give at least one value to match")
            return None
        leaf = _Leaf()
        ok = True
        for item in alternatives:
            if item is None:
                leaf.null = True
            elif item is True:
                leaf.true = True
            elif item is False:
                leaf.false = True
            elif type(item) is str:
                leaf.strings.add(item)
            elif _is_number(item):
                leaf.numbers.add(_as_decoded(item))
            elif isinstance(item, dict):
                ok = self._operator(item, path, leaf) and ok
            else:
                self.problem(
                    path,
                    f"{_show(item)} cannot be matched: values are strings, numbers, true, false, "
                    'null or operator objects like {"prefix": "x"}',
                )
                ok = False
        return leaf.build() if ok else None

    def _operator(self, item: dict[str, Any], path: str, leaf: _Leaf) -> bool:
        if len(item) != 1:
            self.problem(path, f"an operator object holds exactly one operator, got {_show(item)}")
            return False
        ((name, arg),) = item.items()
        if name in _UNSUPPORTED:
            self.problem(path, _UNSUPPORTED[name])
            return False
        if name == "prefix" or name == "suffix":
            return self._affix(name, arg, path, leaf)
        if name == "equals-ignore-case":
            if type(arg) is not str:
                self.problem(path, f"equals-ignore-case takes a string, got {_show(arg)}")
                return False
            leaf.folded.add(arg.casefold())
            return True
        if name == "exists":
            if type(arg) is not bool:
                self.problem(path, f"exists takes true or false, got {_show(arg)}")
                return False
            if arg:
                leaf.exists = True
            else:
                leaf.absent = True
            return True
        if name == "numeric":
            return self._numeric(arg, path, leaf)
        if name == "anything-but":
            return self._anything_but(arg, path, leaf)
        self.problem(path, f"unknown operator {name!r}: Lambda filters know {', '.join(OPERATORS)}")
        return False

    def _affix(self, name: str, arg: Any, path: str, leaf: _Leaf) -> bool:
        folded = False
        if isinstance(arg, dict) and len(arg) == 1 and "equals-ignore-case" in arg:
            arg = arg["equals-ignore-case"]
            folded = True
        if type(arg) is not str:
            self.problem(
                path,
                f'{name} takes a string or {{"equals-ignore-case": "..."}}, got {_show(arg)}',
            )
            return False
        if folded:
            (leaf.folded_prefixes if name == "prefix" else leaf.folded_suffixes).append(
                arg.casefold()
            )
        else:
            (leaf.prefixes if name == "prefix" else leaf.suffixes).append(arg)
        return True

    def _numeric(self, arg: Any, path: str, leaf: _Leaf) -> bool:
        shown = f"numeric {_show(arg)}"
        if not isinstance(arg, list) or not arg or len(arg) % 2:
            self.problem(
                path,
                f'{shown}: numeric takes operator/number pairs, like [">", 0, "<=", 5] or ["=", 3]',
            )
            return False
        pairs = list(zip(arg[::2], arg[1::2], strict=True))
        for op, bound in pairs:
            if op not in ("=", *_LOWER_BOUNDS, *_UPPER_BOUNDS):
                self.problem(
                    path, f"{shown}: unknown comparison {_show(op)}: use =, <, <=, > or >="
                )
                return False
            if not _is_number(bound):
                self.problem(
                    path, f"{shown}: the bound of {op!r} must be a number, got {_show(bound)}"
                )
                return False
        first = pairs[0][0]
        if len(pairs) > 2 or (
            len(pairs) == 2 and (first not in _LOWER_BOUNDS or pairs[1][0] not in _UPPER_BOUNDS)
        ):
            self.problem(
                path,
                f'{shown}: give "=" alone, one bound, or a lower bound (> or >=) followed by an '
                "upper bound (< or <=)",
            )
            return False
        if first == "=":
            leaf.numbers.add(_as_decoded(pairs[0][1]))
            return True
        low: float | None = None
        high: float | None = None
        low_open = high_open = False
        for op, bound in pairs:
            if op in _LOWER_BOUNDS:
                low, low_open = bound, op == ">"
            else:
                high, high_open = bound, op == "<"
        if (
            low is not None
            and high is not None
            and (low > high or (low == high and (low_open or high_open)))
        ):
            self.problem(path, f"{shown}: the range is empty (the lower bound is above the upper)")
            return False
        leaf.ranges.append(_range_test(low, low_open, high, high_open))
        return True

    def _anything_but(self, arg: Any, path: str, leaf: _Leaf) -> bool:
        if isinstance(arg, dict):
            return self._anything_but_object(arg, path, leaf)
        values = arg if isinstance(arg, list) else [arg]
        strings = [v for v in values if type(v) is str]
        numbers = [v for v in values if _is_number(v)]
        if not values or len(strings) + len(numbers) != len(values) or (strings and numbers):
            self.problem(
                path,
                f"anything-but {_show(arg)}: give a string, a number, a non-empty list of only "
                "strings or only numbers, or an object with prefix, suffix or equals-ignore-case",
            )
            return False
        if strings:
            excluded_strings = frozenset(strings)
            leaf.negations.append(lambda v: not (type(v) is str and v in excluded_strings))
        else:
            excluded_numbers = frozenset(_as_decoded(n) for n in numbers)
            leaf.negations.append(
                lambda v: not ((type(v) is int or type(v) is float) and v in excluded_numbers)
            )
        return True

    def _anything_but_object(self, arg: dict[str, Any], path: str, leaf: _Leaf) -> bool:
        name, inner = next(iter(arg.items())) if len(arg) == 1 else ("", None)
        if name in ("prefix", "suffix"):
            if type(inner) is not str or not inner:
                self.problem(
                    path, f"anything-but {name} takes a non-empty string, got {_show(inner)}"
                )
                return False
            if name == "prefix":
                leaf.negations.append(lambda v: not (type(v) is str and v.startswith(inner)))
            else:
                leaf.negations.append(lambda v: not (type(v) is str and v.endswith(inner)))
            return True
        if name == "equals-ignore-case":
            values: list[Any] = inner if isinstance(inner, list) else [inner]
            texts = [v for v in values if type(v) is str]
            if not values or len(texts) != len(values):
                self.problem(
                    path,
                    "anything-but equals-ignore-case takes a string or a list of strings, "
                    f"got {_show(inner)}",
                )
                return False
            folded = frozenset(v.casefold() for v in texts)
            leaf.negations.append(lambda v: not (type(v) is str and v.casefold() in folded))
            return True
        self.problem(
            path,
            f"anything-but {_show(arg)}: the object form takes exactly one of prefix, suffix or "
            "equals-ignore-case",
        )
        return False


def _uses_payload(pattern: dict[str, Any], data_key: str | None) -> bool:
    if data_key is None:
        return False
    if data_key in pattern:
        return True
    branches = pattern.get("$or")
    return isinstance(branches, list) and any(
        isinstance(b, dict) and _uses_payload(b, data_key) for b in branches
    )


# ---------------------------------------------------------------------------------------------
# Building the closures


def _range_test(
    low: float | None, low_open: bool, high: float | None, high_open: bool
) -> Callable[[float], bool]:
    if low is None:
        assert high is not None
        top = high
        return (lambda v: v < top) if high_open else (lambda v: v <= top)
    bottom = low
    if high is None:
        return (lambda v: v > bottom) if low_open else (lambda v: v >= bottom)
    top = high
    if low_open and high_open:
        return lambda v: bottom < v < top
    if low_open:
        return lambda v: bottom < v <= top
    if high_open:
        return lambda v: bottom <= v < top
    return lambda v: bottom <= v <= top


class _Leaf:
    """The alternatives of one leaf list, gathered by kind and built into one field test."""

    def __init__(self) -> None:
        self.strings: set[str] = set()
        self.numbers: set[int | float] = set()
        self.null = self.true = self.false = False
        self.prefixes: list[str] = []
        self.suffixes: list[str] = []
        self.folded: set[str] = set()
        self.folded_prefixes: list[str] = []
        self.folded_suffixes: list[str] = []
        self.ranges: list[Callable[[float], bool]] = []
        self.negations: list[Callable[[Any], bool]] = []
        self.exists = False
        self.absent = False

    def build(self) -> _FieldTest:  # noqa: C901 - one flat closure per field: the hot path
        strings = frozenset(self.strings)
        # Numbers compare by value (300 matches 300.0); bools are kept apart from 1 and 0.
        numbers = frozenset(self.numbers)
        prefixes = tuple(self.prefixes)
        suffixes = tuple(self.suffixes)
        folded = frozenset(self.folded)
        folded_prefixes = tuple(self.folded_prefixes)
        folded_suffixes = tuple(self.folded_suffixes)
        fold = bool(folded or folded_prefixes or folded_suffixes)
        ranges = tuple(self.ranges)
        negations = tuple(self.negations)
        null, true, false = self.null, self.true, self.false
        exists, absent = self.exists, self.absent

        def scalar(v: Any) -> bool:  # noqa: C901 - inlined on purpose (bench/filter.py)
            t = type(v)
            if t is str:
                if v in strings:
                    return True
                if prefixes and v.startswith(prefixes):
                    return True
                if suffixes and v.endswith(suffixes):
                    return True
                if fold:
                    f = v.casefold()
                    if (
                        f in folded
                        or (folded_prefixes and f.startswith(folded_prefixes))
                        or (folded_suffixes and f.endswith(folded_suffixes))
                    ):
                        return True
            elif t is int or t is float:
                if v in numbers:
                    return True
                for in_range in ranges:
                    if in_range(v):
                        return True
            elif v is None:
                if null:
                    return True
            elif v is True:
                if true:
                    return True
            elif v is False and false:
                return True
            for negation in negations:
                if negation(v):
                    return True
            return exists

        def in_list(items: list[Any]) -> int:
            # 2: an element matched; 1: leaves but no match; 0: no leaf at all (only objects).
            found = 0
            for item in items:
                t = type(item)
                if t is dict:
                    continue
                if t is list:
                    inner = in_list(item)
                    if inner == 2:
                        return 2
                    found |= inner
                    continue
                if scalar(item):
                    return 2
                found = 1
            return found

        def field(v: Any) -> bool:
            t = type(v)
            if t is str:
                return scalar(v)
            if v is _MISSING or t is dict:
                # exists only looks at leaves: an object is not a value of this field.
                return absent
            if t is list:
                found = in_list(v)
                return found == 2 or (found == 0 and absent)
            return scalar(v)

        # The most common leaf, a list of plain strings, answers a string without scalar().
        if strings and not (fold or prefixes or suffixes or negations or exists):

            def strings_field(v: Any) -> bool:
                if type(v) is str:
                    return v in strings
                return field(v)

            return strings_field
        return field


def _nested_field(obj: _ObjectTest) -> _FieldTest:
    # What an absent or scalar field gives is fixed, so it is worked out once: only
    # `exists: false` patterns can match there.
    when_empty = obj(_EMPTY)

    def dicts(items: list[Any]) -> list[Mapping[str, Any]]:
        out: list[Mapping[str, Any]] = []
        for item in items:
            if type(item) is dict:
                out.append(item)
            elif type(item) is list:
                out.extend(dicts(item))
        return out

    def field(v: Any) -> bool:
        if type(v) is dict:
            return obj(v)
        if type(v) is list:
            # An array of objects matches if one element matches the whole sub-pattern, so
            # conditions are never satisfied by two different elements together.
            elements = dicts(v)
            if not elements:
                return when_empty
            return any(obj(e) for e in elements)
        return when_empty

    return field


def _all_fields(
    fields: list[tuple[str, _FieldTest]], groups: list[list[_ObjectTest]]
) -> _ObjectTest:
    if len(fields) == 1 and not groups:
        ((key, test),) = fields

        def one(obj: Mapping[str, Any]) -> bool:
            return test(obj.get(key, _MISSING))

        return one
    pairs = tuple(fields)
    ors = tuple(tuple(g) for g in groups)

    def every(obj: Mapping[str, Any]) -> bool:
        get = obj.get
        for key, test in pairs:
            if not test(get(key, _MISSING)):
                return False
        for branches in ors:
            for branch in branches:
                if branch(obj):
                    break
            else:
                return False
        return True

    return every


def _metadata(key: str, field: _FieldTest) -> _RecordTest:
    def test(entry: Mapping[str, Any], payload: Any) -> bool:
        return field(entry.get(key, _MISSING))

    return test


def _kinesis_metadata(key: str, field: _FieldTest) -> _RecordTest:
    # AWS's own example filters on partitionKey at the top level, while the record keeps it
    # under "kinesis": a key missing at the top level is looked up there too.
    def test(entry: Mapping[str, Any], payload: Any) -> bool:
        value = entry.get(key, _MISSING)
        if value is _MISSING:
            inner = entry.get("kinesis")
            if _is_mapping(inner):
                value = inner.get(key, _MISSING)
        return field(value)

    return test


def _all_records(tests: list[_RecordTest]) -> _RecordTest | None:
    if not tests:
        return None
    if len(tests) == 1:
        return tests[0]
    chain = tuple(tests)

    def every(entry: Mapping[str, Any], payload: Any) -> bool:
        # A plain loop: all() would build a generator for every record.
        for test in chain:  # noqa: SIM110
            if not test(entry, payload):
                return False
        return True

    return every


def _any_record(tests: list[_RecordTest]) -> _RecordTest:
    chain = tuple(tests)

    def some(entry: Mapping[str, Any], payload: Any) -> bool:
        for test in chain:  # noqa: SIM110 (no generator per record)
            if test(entry, payload):
                return True
        return False

    return some
