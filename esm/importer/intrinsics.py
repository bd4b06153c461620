"""CloudFormation's intrinsic functions, resolved as far as the template and the command
line allow; what stays unknown becomes a `${VAR}` for esm's environment to supply.

Resolved: `Ref` (to `--param` values, parameter defaults, pseudo parameters and the
template's resources), `Fn::GetAtt` (the ARNs and names a resource's properties determine),
`Fn::Sub`, `Fn::Join`, `Fn::Select`, `Fn::Split`, `Fn::If` (when its condition can be
evaluated), `Fn::FindInMap` and `AWS::NoValue`. Everything else parses and is left unknown.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from esm.importer.values import NO_VALUE, Text, Variable, concat, variable_name

__all__ = ["Resolver", "as_mapping"]

# What stands in for an unknown region and account when the rest of the output is checked.
SAMPLE_REGION = "us-east-1"
SAMPLE_ACCOUNT = "000000000000"

# Pseudo parameters that differ between deployments: the variable each becomes, and its
# sample. The partition and URL suffix are AWS's own unless given: esm's ARNs are aws ones.
_PSEUDO_VARIABLES: dict[str, tuple[str, str]] = {
    "AWS::Region": ("AWS_REGION", SAMPLE_REGION),
    "AWS::AccountId": ("AWS_ACCOUNT_ID", SAMPLE_ACCOUNT),
    "AWS::StackName": ("AWS_STACK_NAME", "stack"),
    "AWS::StackId": ("AWS_STACK_ID", "stack-id"),
    "AWS::NotificationARNs": ("AWS_NOTIFICATION_ARNS", "arn"),
}
_PSEUDO_DEFAULTS = {"AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com"}

_SUB_REFERENCE = re.compile(r"\$\{(!?)([^}]*)\}")


def as_mapping(value: Any) -> Mapping[str, Any]:
    """`value` when it is a mapping, else an empty one: a template's sections may be absent
    or malformed, and a malformed section has nothing to import."""
    return value if isinstance(value, Mapping) else {}


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


class Resolver:
    """Resolves the intrinsic functions of one template's values."""

    def __init__(self, template: Mapping[str, Any], given: Mapping[str, str]) -> None:
        self._resources = as_mapping(template.get("Resources"))
        self._parameters = as_mapping(template.get("Parameters"))
        self._maps = as_mapping(template.get("Mappings"))
        self._conditions = as_mapping(template.get("Conditions"))
        self._given = given
        self._resolving: set[str] = set()
        self._where = ""
        self.variables: dict[str, Variable] = {}
        """Every variable left in the output, by name."""
        self.first_use: dict[str, str] = {}
        """Where in the template each variable was first needed."""

    # ------------------------------------------------------------------ values

    def resolve(self, value: Any, where: str) -> Any:
        """`value` with its intrinsic functions resolved: plain values, with `Text` for
        strings holding variables; `NO_VALUE` members are removed."""
        if isinstance(value, Mapping):
            if len(value) == 1:
                key, argument = next(iter(value.items()))
                if key == "Ref":
                    return self.ref(argument, where)
                if isinstance(key, str) and key.startswith("Fn::"):
                    return self._function(key, argument, where)
            resolved = {key: self.resolve(item, f"{where}.{key}") for key, item in value.items()}
            return {key: item for key, item in resolved.items() if item is not NO_VALUE}
        if isinstance(value, list):
            items = [self.resolve(item, f"{where}[{i}]") for i, item in enumerate(value)]
            return [item for item in items if item is not NO_VALUE]
        return value

    def text(self, value: Any, where: str) -> str | Text | None:
        """`value` resolved to a string (numbers and booleans as CloudFormation writes
        them), or None when it is not one."""
        resolved = self.resolve(value, where)
        if isinstance(resolved, str | Text):
            return resolved
        if isinstance(resolved, bool):
            return "true" if resolved else "false"
        if isinstance(resolved, int | float):
            return str(resolved)
        return None

    def unknown(self, origin: str, words: tuple[str, ...], sample: str | None, where: str) -> Text:
        """A variable standing for what `origin` would be, named from `words`."""
        base = variable_name(*words)
        name, suffix = base, 2
        # Two different references that make the same name get numbered apart.
        while name in self.variables and self.variables[name].origin != origin:
            name, suffix = f"{base}_{suffix}", suffix + 1
        if name not in self.variables:
            self.variables[name] = Variable(name, origin, sample)
            self.first_use[name] = where
        return Text((self.variables[name],))

    # ------------------------------------------------------------------ Ref

    def ref(self, name: Any, where: str) -> Any:
        if not isinstance(name, str):
            return self.unknown(f"!Ref {_short(name)}", ("REF",), None, where)
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self._given:
            return self._given_value(name)
        if name in _PSEUDO_DEFAULTS:
            return _PSEUDO_DEFAULTS[name]
        if name in _PSEUDO_VARIABLES:
            variable, sample = _PSEUDO_VARIABLES[name]
            return self.unknown(f"!Ref {name}", (variable,), sample, where)
        if name in self._parameters:
            return self._parameter(name, where)
        if name in self._resources:
            return self.resource_value(name, None, where)
        return self.unknown(f"!Ref {name}", (name,), None, where)

    def _given_value(self, name: str) -> Any:
        value = self._given[name]
        kind = str(as_mapping(self._parameters.get(name)).get("Type", ""))
        return value.split(",") if _is_list_type(kind) else value

    def _parameter(self, name: str, where: str) -> Any:
        declared = as_mapping(self._parameters.get(name))
        kind = str(declared.get("Type", "String"))
        # An SSM parameter's default is the parameter's name in SSM, not its value.
        if "Default" not in declared or kind.startswith("AWS::SSM::Parameter::Value"):
            return self.unknown(f"!Ref {name} (a parameter with no value)", (name,), None, where)
        default = declared["Default"]
        if _is_list_type(kind) and isinstance(default, str):
            return [item.strip() for item in default.split(",")]
        return default

    # ------------------------------------------------------------------ resources

    def resource_value(self, logical_id: str, attribute: str | None, where: str) -> Any:
        """`!Ref logical_id` (attribute None) or `!GetAtt logical_id.attribute`."""
        origin = f"!Ref {logical_id}" if attribute is None else f"!GetAtt {logical_id}.{attribute}"
        resource = as_mapping(self._resources.get(logical_id))
        kind = str(resource.get("Type", ""))
        words = (logical_id,) if attribute is None else (logical_id, attribute)
        facts = _RESOURCES.get(kind)
        if facts is None or logical_id in self._resolving:
            return self.unknown(origin, words, None, where)
        with self._resolving_resource(logical_id):
            self._where = where
            properties = as_mapping(resource.get("Properties"))
            name_value = properties.get(facts.name_property)
            name = None if name_value is None else self.text(name_value, f"{where}({logical_id})")
            value = facts.value(self, name, attribute, properties)
        if value is None:
            return self.unknown(origin, words, facts.sample(attribute, properties), where)
        return value

    @contextmanager
    def _resolving_resource(self, logical_id: str) -> Iterator[None]:
        # A resource whose name refers back to itself would otherwise never end.
        self._resolving.add(logical_id)
        try:
            yield
        finally:
            self._resolving.discard(logical_id)

    def arn(self, service: str, resource: str | Text, *, regional: bool = True) -> str | Text:
        """An ARN in the template's partition, region and account."""
        partition = self.text({"Ref": "AWS::Partition"}, self._where) or "aws"
        if not regional:
            return concat("arn:", partition, f":{service}:::", resource)
        region = self.text({"Ref": "AWS::Region"}, self._where) or ""
        account = self.text({"Ref": "AWS::AccountId"}, self._where) or ""
        return concat("arn:", partition, f":{service}:", region, ":", account, ":", resource)

    def queue_url(self, name: str | Text) -> str | Text:
        region = self.text({"Ref": "AWS::Region"}, self._where) or ""
        account = self.text({"Ref": "AWS::AccountId"}, self._where) or ""
        suffix = self.text({"Ref": "AWS::URLSuffix"}, self._where) or "amazonaws.com"
        return concat("https://sqs.", region, ".", suffix, "/", account, "/", name)

    # ------------------------------------------------------------------ functions

    def _function(self, key: str, argument: Any, where: str) -> Any:
        handler = _FUNCTIONS.get(key)
        if handler is None:
            words = (key.removeprefix("Fn::"),)
            return self.unknown(f"{key} {_short(argument)}", words, None, where)
        return handler(self, argument, where)

    def _get_att(self, argument: Any, where: str) -> Any:
        if isinstance(argument, str):
            argument = list(argument.partition(".")[::2])
        if not (isinstance(argument, list) and len(argument) == 2):
            return self.unknown(f"!GetAtt {_short(argument)}", ("GETATT",), None, where)
        logical_id, attribute = argument
        attribute = self.text(attribute, where)
        if not isinstance(logical_id, str) or not isinstance(attribute, str):
            return self.unknown(f"!GetAtt {_short(argument)}", ("GETATT",), None, where)
        return self.resource_value(logical_id, attribute, where)

    def _sub(self, argument: Any, where: str) -> Any:
        values: Mapping[str, Any] = {}
        if isinstance(argument, list) and len(argument) == 2:
            argument, values = argument[0], as_mapping(argument[1])
        if not isinstance(argument, str):
            return self.unknown(f"!Sub {_short(argument)}", ("SUB",), None, where)
        pieces: list[str | Text] = []
        position = 0
        for match in _SUB_REFERENCE.finditer(argument):
            pieces.append(argument[position : match.start()])
            position = match.end()
            if match[1]:  # ${!Name} is the literal text ${Name}
                pieces.append("${" + match[2] + "}")
                continue
            pieces.append(self._sub_reference(match[2].strip(), values, where))
        pieces.append(argument[position:])
        return concat(*pieces)

    def _sub_reference(self, name: str, values: Mapping[str, Any], where: str) -> str | Text:
        if name in values:
            value = values[name]
        elif "." in name and not name.startswith("AWS::"):
            value = {"Fn::GetAtt": list(name.partition(".")[::2])}
        else:
            value = {"Ref": name}
        text = self.text(value, where)
        if text is None:
            return self.unknown(f"${{{name}}} in !Sub", (name,), None, where)
        return text

    def _join(self, argument: Any, where: str) -> Any:
        if not (isinstance(argument, list) and len(argument) == 2):
            return self.unknown(f"!Join {_short(argument)}", ("JOIN",), None, where)
        delimiter = self.text(argument[0], where)
        items = self.resolve(argument[1], where)
        if not isinstance(delimiter, str) or not isinstance(items, list):
            return self.unknown(f"!Join {_short(argument)}", ("JOIN",), None, where)
        pieces: list[str | Text] = []
        for index, item in enumerate(items):
            text = self.text(item, where)
            if text is None:
                return self.unknown(f"!Join {_short(argument)}", ("JOIN",), None, where)
            pieces.extend([delimiter, text] if index else [text])
        return concat(*pieces)

    def _select(self, argument: Any, where: str) -> Any:
        if isinstance(argument, list) and len(argument) == 2:
            index = self.resolve(argument[0], where)
            items = self.resolve(argument[1], where)
            if isinstance(index, str) and index.isdigit():
                index = int(index)
            if isinstance(index, int) and isinstance(items, list) and 0 <= index < len(items):
                return items[index]
        return self.unknown(f"!Select {_short(argument)}", ("SELECT",), None, where)

    def _split(self, argument: Any, where: str) -> Any:
        if isinstance(argument, list) and len(argument) == 2:
            delimiter = self.text(argument[0], where)
            source = self.text(argument[1], where)
            if isinstance(delimiter, str) and delimiter and isinstance(source, str):
                return source.split(delimiter)
        return self.unknown(f"!Split {_short(argument)}", ("SPLIT",), None, where)

    def _if(self, argument: Any, where: str) -> Any:
        if not (isinstance(argument, list) and len(argument) == 3):
            return self.unknown(f"!If {_short(argument)}", ("IF",), None, where)
        name, when_true, when_false = argument
        decided = self.condition(name) if isinstance(name, str) else None
        if decided is None:
            return self.unknown(f"!If [{_short(name)}, ...]", ("IF", str(name)), None, where)
        return self.resolve(when_true if decided else when_false, where)

    def _find_in_map(self, argument: Any, where: str) -> Any:
        keys = self.resolve(argument, where) if isinstance(argument, list) else None
        if isinstance(keys, list) and len(keys) >= 3 and all(isinstance(k, str) for k in keys[:3]):
            top = as_mapping(as_mapping(self._maps.get(keys[0])).get(keys[1]))
            if keys[2] in top:
                return self.resolve(top[keys[2]], where)
        words = tuple(k for k in (keys or []) if isinstance(k, str)) or ("FINDINMAP",)
        return self.unknown(f"!FindInMap {_short(argument)}", words, None, where)

    def _import_value(self, argument: Any, where: str) -> Any:
        name = self.text(argument, where)
        words = (name.literal_text(),) if isinstance(name, Text) else (name or "IMPORT",)
        shown = name.rendered() if isinstance(name, Text) else name
        return self.unknown(f"!ImportValue {shown}", words, None, where)

    # ------------------------------------------------------------------ conditions

    def condition(self, name: str) -> bool | None:
        """The value of the template's condition `name`; None when it cannot be known."""
        if name in self._resolving or name not in self._conditions:
            return None
        with self._resolving_resource(name):
            return self._truth(self._conditions[name])

    def _truth(self, value: Any) -> bool | None:
        if isinstance(value, bool):
            return value
        if not (isinstance(value, Mapping) and len(value) == 1):
            return None
        key, argument = next(iter(value.items()))
        if key == "Condition" and isinstance(argument, str):
            return self.condition(argument)
        if key == "Fn::Equals" and isinstance(argument, list) and len(argument) == 2:
            left, right = (self.text(item, "Conditions") for item in argument)
            if isinstance(left, str) and isinstance(right, str):
                return left == right
            return None
        if key in ("Fn::Not", "Fn::And", "Fn::Or") and isinstance(argument, list):
            return _combine(key, [self._truth(item) for item in argument])
        return None


def _combine(key: str, values: list[bool | None]) -> bool | None:
    if key == "Fn::Not":
        return None if len(values) != 1 or values[0] is None else not values[0]
    if key == "Fn::And":
        return False if False in values else (None if None in values else True)
    return True if True in values else (None if None in values else False)


def _is_list_type(kind: str) -> bool:
    return kind == "CommaDelimitedList" or kind.startswith("List<")


_FUNCTIONS: dict[str, Callable[[Resolver, Any, str], Any]] = {
    "Fn::GetAtt": Resolver._get_att,
    "Fn::Sub": Resolver._sub,
    "Fn::Join": Resolver._join,
    "Fn::Select": Resolver._select,
    "Fn::Split": Resolver._split,
    "Fn::If": Resolver._if,
    "Fn::FindInMap": Resolver._find_in_map,
    "Fn::ImportValue": Resolver._import_value,
}


# ---------------------------------------------------------------------- resource types


class _ResourceFacts:
    """What a resource type's Ref and attributes are, given its name property."""

    def __init__(
        self,
        name_property: str,
        value: Callable[[Resolver, str | Text | None, str | None, Mapping[str, Any]], Any],
        samples: Mapping[str | None, str],
    ) -> None:
        self.name_property = name_property
        self.value = value
        self._samples = samples

    def sample(self, attribute: str | None, properties: Mapping[str, Any]) -> str | None:
        sample = self._samples.get(attribute)
        if sample is not None and properties.get("FifoQueue") is True:
            return f"{sample}.fifo"
        return sample


def _named(
    ref: Callable[[Resolver, str | Text], str | Text],
    attributes: Mapping[str, Callable[[Resolver, str | Text], str | Text]],
) -> Callable[[Resolver, str | Text | None, str | None, Mapping[str, Any]], Any]:
    """A resource whose Ref and attributes all follow from its name; without a name
    (CloudFormation makes one up) none of them can be known."""

    def value(
        resolver: Resolver, name: str | Text | None, attribute: str | None, _: Mapping[str, Any]
    ) -> Any:
        if name is None:
            return None
        build = ref if attribute is None else attributes.get(attribute)
        return None if build is None else build(resolver, name)

    return value


def _itself(_: Resolver, name: str | Text) -> str | Text:
    return name


_SAMPLE_ARN = f"{SAMPLE_REGION}:{SAMPLE_ACCOUNT}"
_SAMPLE_LABEL = "2024-01-01T00:00:00.000"

_RESOURCES: dict[str, _ResourceFacts] = {
    "AWS::Kinesis::Stream": _ResourceFacts(
        "Name",
        _named(_itself, {"Arn": lambda r, n: r.arn("kinesis", concat("stream/", n))}),
        {"Arn": f"arn:aws:kinesis:{_SAMPLE_ARN}:stream/sample", None: "sample"},
    ),
    "AWS::SQS::Queue": _ResourceFacts(
        "QueueName",
        _named(
            Resolver.queue_url,
            {
                "Arn": lambda r, n: r.arn("sqs", n),
                "QueueName": _itself,
                "QueueUrl": Resolver.queue_url,
            },
        ),
        {"Arn": f"arn:aws:sqs:{_SAMPLE_ARN}:sample", "QueueName": "sample"},
    ),
    "AWS::SNS::Topic": _ResourceFacts(
        "TopicName",
        _named(
            lambda r, n: r.arn("sns", n),
            {"TopicArn": lambda r, n: r.arn("sns", n), "TopicName": _itself},
        ),
        {None: f"arn:aws:sns:{_SAMPLE_ARN}:sample", "TopicArn": f"arn:aws:sns:{_SAMPLE_ARN}:s"},
    ),
    "AWS::S3::Bucket": _ResourceFacts(
        "BucketName",
        _named(_itself, {"Arn": lambda r, n: r.arn("s3", n, regional=False)}),
        {"Arn": "arn:aws:s3:::sample", None: "sample"},
    ),
    # A table's StreamArn ends in the time its stream was enabled: never in the template.
    "AWS::DynamoDB::Table": _ResourceFacts(
        "TableName",
        _named(_itself, {"Arn": lambda r, n: r.arn("dynamodb", concat("table/", n))}),
        {
            "StreamArn": f"arn:aws:dynamodb:{_SAMPLE_ARN}:table/sample/stream/{_SAMPLE_LABEL}",
            "Arn": f"arn:aws:dynamodb:{_SAMPLE_ARN}:table/sample",
            None: "sample",
        },
    ),
    "AWS::Lambda::Function": _ResourceFacts(
        "FunctionName",
        _named(_itself, {"Arn": lambda r, n: r.arn("lambda", concat("function:", n))}),
        {"Arn": f"arn:aws:lambda:{_SAMPLE_ARN}:function:sample", None: "sample"},
    ),
}
_RESOURCES["AWS::Serverless::Function"] = _RESOURCES["AWS::Lambda::Function"]
