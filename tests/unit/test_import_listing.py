"""esm import of `aws lambda list-event-source-mappings` output, and of inputs it refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from esm.cli import main
from esm.config import load_config

FIXTURES = Path(__file__).parent.parent / "fixtures" / "import"
LISTING = str(FIXTURES / "list-event-source-mappings.json")


def test_listing_drops_output_only_fields_and_translates_state(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    output = tmp_path / "esm.yaml"
    assert main(["import", LISTING, "--function-type", "lambda", "-o", str(output)]) == 0
    err = capsys.readouterr().err.splitlines()
    data: dict[str, Any] = yaml.safe_load(output.read_text())
    assert data["functions"] == {
        "payments": {
            "type": "lambda",
            "function_name": "arn:aws:lambda:us-east-1:123456789012:function:payments",
        },
        "invoices": {
            "type": "lambda",
            "function_name": "arn:aws:lambda:us-east-1:123456789012:function:invoices:prod",
        },
    }
    kinesis, sqs, dynamodb = data["mappings"]
    assert kinesis == {
        "FunctionName": "payments",
        "EventSourceArn": "arn:aws:kinesis:us-east-1:123456789012:stream/payments",
        "BatchSize": 100,
        "MaximumBatchingWindowInSeconds": 0,
        "StartingPosition": "LATEST",
        "ParallelizationFactor": 1,
        "BisectBatchOnFunctionError": False,
        "MaximumRetryAttempts": -1,
        "MaximumRecordAgeInSeconds": -1,
        "DestinationConfig": {
            "OnFailure": {"Destination": "arn:aws:sqs:us-east-1:123456789012:payments-dlq"}
        },
        "FunctionResponseTypes": [],
        "TumblingWindowInSeconds": 0,
    }
    assert sqs == {
        "FunctionName": "invoices",
        "EventSourceArn": "arn:aws:sqs:us-east-1:123456789012:invoices",
        "Enabled": False,  # State: Disabled
        "BatchSize": 10,
        "MaximumBatchingWindowInSeconds": 0,
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        "FilterCriteria": {
            "Filters": [{"Pattern": '{"body": {"total": [{"numeric": [">", 100]}]}}'}]
        },
        "ScalingConfig": {"MaximumConcurrency": 10},
    }
    # An empty OnFailure is no destination at all.
    assert "DestinationConfig" not in dynamodb
    assert dynamodb["MetricsConfig"] == {"Metrics": ["EventCount"]}
    for mapping in data["mappings"]:
        for field in (
            "UUID",
            "State",
            "StateTransitionReason",
            "LastModified",
            "LastProcessingResult",
            "EventSourceMappingArn",
            "FunctionArn",
        ):
            assert field not in mapping
    assert err == [
        "esm import: EventSourceMappings[1].ProvisionedPollerConfig: not translated: "
        "provisioned mode is not supported by esm",
        "esm import: EventSourceMappings[3]: skipped: an Amazon MSK source: esm reads "
        "Kinesis, DynamoDB Streams and SQS",
        f"esm import: 3 mapping(s) and 2 function(s) written to {output}",
    ]
    load_config(output)
    assert main(["validate", "-c", str(output)]) == 0


def test_esm_refuses_a_parameter_it_is_dropped_and_listed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # AWS would refuse this too: BatchSize over 10 on SQS needs a batching window.
    listing = tmp_path / "listing.json"
    listing.write_text(
        '{"EventSourceMappings": [{"FunctionArn": "arn:aws:lambda:us-east-1:123456789012:'
        'function:f", "EventSourceArn": "arn:aws:sqs:us-east-1:123456789012:q", '
        '"BatchSize": 100, "Price": "$5 ${X}"}]}'
    )
    output = tmp_path / "esm.yaml"
    assert main(["import", str(listing), "-o", str(output)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (
        "esm import: EventSourceMappings[0].Price: not translated: not a parameter of "
        "Kinesis, DynamoDB or SQS mappings"
    )
    assert err[1].startswith(
        "esm import: EventSourceMappings[0].BatchSize: not translated: esm refuses it: "
        "Maximum batch window in seconds must be greater than 0"
    )
    data = yaml.safe_load(output.read_text())
    assert data["mappings"] == [
        {"FunctionName": "f", "EventSourceArn": "arn:aws:sqs:us-east-1:123456789012:q"}
    ]
    assert main(["validate", "-c", str(output)]) == 0


def test_a_literal_dollar_survives_esm_expansion(tmp_path: Path) -> None:
    from esm.importer.output import dump_config

    text = dump_config({"functions": {"f": {"type": "http", "url": "http://h/$x/${y}"}}}, [])
    assert "$$x/$${y}" in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("Resources: [unclosed", "invalid YAML"),
        ('{"EventSourceMappings": [', "invalid JSON"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "not a text file (binary data)"),
        ("", "the file is empty"),
        ("- just\n- a list\n", "neither a SAM or CloudFormation template"),
        (
            "Resources:\n  Q: {Type: 'AWS::SQS::Queue', Properties: {QueueName: q}}\n",
            "no event source mappings in this CloudFormation template",
        ),
        ('{"EventSourceMappings": []}', "no event source mappings"),
        ("Resources:\n  X: !Ref\n    - [a: b\n", "invalid YAML"),
    ],
)
def test_bad_inputs_exit_1_with_one_line(
    content: str | bytes,
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "input"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    assert main(["import", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"esm import: {path}")
    assert message in lines[0]
    assert "Traceback" not in captured.err


def test_a_missing_file_and_an_unknown_function_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["import", str(tmp_path / "nope.yaml")]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"esm import: {tmp_path / 'nope.yaml'}: cannot read the file: No such file or directory"
    ]
    assert main(["import", LISTING, "--function-type", "weighted"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "esm import: --function-type 'weighted': must be one of http, python, command, "
        "lambda, runtime"
    ]


def test_nothing_importable_lists_why_then_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "kafka.json"
    path.write_text(
        '{"EventSourceMappings": [{"FunctionArn": "arn:aws:lambda:us-east-1:1:function:f",'
        ' "EventSourceArn": "arn:aws:kafka:us-east-1:1:cluster/c/x", "Topics": ["t"]}]}'
    )
    assert main(["import", str(path)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "esm import: EventSourceMappings[0]: skipped: an Amazon MSK source: esm reads "
        "Kinesis, DynamoDB Streams and SQS",
        f"esm import: {path}: nothing could be imported: 1 mapping(s) found, none esm can run",
    ]


@pytest.mark.parametrize("kind", ["python", "command", "runtime"])
def test_other_function_types(kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    sam = str(FIXTURES / "sam-template.yaml")
    assert main(["import", sam, "--function-type", kind, "--command", "./run {function}"]) == 0
    functions = yaml.safe_load(capsys.readouterr().out)["functions"]
    expected = {
        # Lambda's handler module.function, from Globals or the function, as esm writes it.
        "python": ({"handler": "app.handlers:handle"}, {"handler": "jobs.main:run"}),
        "command": ({"command": "./run orders-prod"}, {"command": "./run JobsFunction"}),
        "runtime": ({"listen": "127.0.0.1:9001"}, {"listen": "127.0.0.1:9002"}),
    }[kind]
    assert functions["orders-prod"].items() >= {"type": kind, **expected[0]}.items()
    assert functions["JobsFunction"].items() >= {"type": kind, **expected[1]}.items()
