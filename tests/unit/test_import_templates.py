"""esm import of SAM and CloudFormation templates: mappings field by field, what is listed
as untranslated, and the output loaded by esm's own configuration loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from esm.cli import main
from esm.config import load_config

FIXTURES = Path(__file__).parent.parent / "fixtures" / "import"


def _import(
    capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, dict[str, Any], list[str], str]:
    code = main(["import", *args])
    captured = capsys.readouterr()
    # The output is read as esm reads it: ${VAR} left as text, $$ a literal dollar.
    data = yaml.safe_load(captured.out) if captured.out else {}
    return code, data, captured.err.splitlines(), captured.out


def _validates(
    tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "esm.yaml"
    path.write_text(text)
    load_config(path)  # raises ConfigError listing every problem
    assert main(["validate", "-c", str(path)]) == 0


def test_sam_template_mappings_field_by_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, data, err, text = _import(
        capsys,
        str(FIXTURES / "sam-template.yaml"),
        "--region",
        "eu-west-1",
        "--account",
        "123456789012",
        "--url",
        "http://app:8080/{function}",
    )
    assert code == 0
    assert data["functions"] == {
        # FunctionName !Sub orders-${Stage} with the parameter's default; Globals' settings.
        "orders-prod": {
            "type": "http",
            "url": "http://app:8080/orders-prod",
            "timeout": 30,
            "memory_size": 512,
        },
        # No FunctionName: the logical id; its own Timeout wins over Globals'.
        "JobsFunction": {
            "type": "http",
            "url": "http://app:8080/JobsFunction",
            "timeout": 60,
            "memory_size": 512,
            "max_concurrency": 20,
        },
    }
    kinesis, dynamodb, jobs, audit = data["mappings"]
    assert kinesis == {
        "FunctionName": "orders-prod",
        "EventSourceArn": "arn:aws:kinesis:eu-west-1:123456789012:stream/orders-prod",
        "BatchSize": 250,  # !Ref OrdersBatchSize, a Number parameter
        "MaximumBatchingWindowInSeconds": 5,
        "StartingPosition": "TRIM_HORIZON",
        "ParallelizationFactor": 2,
        "BisectBatchOnFunctionError": True,
        "MaximumRetryAttempts": 3,
        # SAM's OnFailure.Type is SAM's own (it picks permissions): not carried over.
        "DestinationConfig": {
            "OnFailure": {"Destination": "arn:aws:sqs:eu-west-1:123456789012:failed-orders"}
        },
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        "FilterCriteria": {"Filters": [{"Pattern": '{"data": {"kind": ["order"]}}'}]},
    }
    assert dynamodb == {
        "FunctionName": "orders-prod",
        "EventSourceArn": "${ORDERSTABLE_STREAMARN}",  # a table's StreamArn is never known
        "Enabled": False,
        "BatchSize": 100,
        "StartingPosition": "LATEST",
        # Its table's name is not known yet, and the function has another mapping: named
        # from the event, so that two derived names can never clash.
        "name": "orders-prod-TableChanges",
    }
    assert jobs == {
        "FunctionName": "JobsFunction",
        "EventSourceArn": "arn:aws:sqs:eu-west-1:123456789012:jobs-prod",
        "BatchSize": 50,
        "MaximumBatchingWindowInSeconds": 2,
        "ScalingConfig": {"MaximumConcurrency": 5},
    }
    assert audit == {
        "FunctionName": "JobsFunction",
        "EventSourceArn": "${AUDITQUEUEARN}",
        "name": "JobsFunction-Audit",
    }
    events = "esm import: Resources.{}.Properties.Events."
    assert err == [
        events.format("OrdersFunction") + "Nightly: skipped: event type Schedule is not an "
        "event source mapping (esm reads Kinesis, DynamoDB and SQS events)",
        events.format("JobsFunction") + "Jobs.Properties.ProvisionedPollerConfig: not "
        "translated: provisioned mode is not supported by esm",
        events.format("JobsFunction") + "Audit.Properties.KmsKeyArn: not translated: esm "
        "keeps FilterCriteria in esm.yaml: there is nothing in AWS to encrypt",
        events.format("JobsFunction") + "Broker: skipped: an Amazon MQ source: esm reads "
        "Kinesis, DynamoDB Streams and SQS",
        "esm import: ${ORDERSTABLE_STREAMARN}: !GetAtt OrdersTable.StreamArn could not be "
        "resolved: set ORDERSTABLE_STREAMARN when esm runs",
        "esm import: ${AUDITQUEUEARN}: !Ref AuditQueueArn (a parameter with no value) could "
        "not be resolved: set AUDITQUEUEARN when esm runs",
        "esm import: 4 mapping(s) and 2 function(s) written to stdout",
    ]
    _validates(
        tmp_path,
        text,
        monkeypatch,
        {
            "ORDERSTABLE_STREAMARN": "arn:aws:dynamodb:eu-west-1:123456789012:table/"
            "orders-prod/stream/2024-05-01T00:00:00.000",
            "AUDITQUEUEARN": "arn:aws:sqs:eu-west-1:123456789012:audit",
        },
    )


def test_sam_parameters_and_pseudo_parameters_from_the_command_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, data, err, _ = _import(
        capsys,
        str(FIXTURES / "sam-template.yaml"),
        "--param",
        "Stage=dev",
        "--param",
        "AuditQueueArn=arn:aws:sqs:eu-west-1:123456789012:audit",
        "--param",
        "AWS::Region=eu-west-1",
    )
    assert code == 0
    arns = [m["EventSourceArn"] for m in data["mappings"]]
    # The account was given neither way: a variable inside the ARN.
    assert arns[0] == "arn:aws:kinesis:eu-west-1:${AWS_ACCOUNT_ID}:stream/orders-dev"
    assert arns[3] == "arn:aws:sqs:eu-west-1:123456789012:audit"
    assert "orders-dev" in data["functions"]
    assert any(
        "${AWS_ACCOUNT_ID}: !Ref AWS::AccountId could not be resolved" in line for line in err
    )


@pytest.mark.parametrize("name", ["cloudformation.yaml", "cloudformation.json"])
def test_cloudformation_mappings_field_by_field(
    name: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, data, err, text = _import(
        capsys, str(FIXTURES / name), "--account", "123456789012", "--function-type", "lambda"
    )
    assert code == 0
    assert data["functions"] == {
        # !GetAtt ClicksFunction.Arn names the template's function: its FunctionName.
        "clicks-handler": {"type": "lambda"},
        "archiver": {"type": "lambda"},
        # A qualified ARN: the function is invoked as written, alias included.
        "tasks": {
            "type": "lambda",
            "function_name": "arn:aws:lambda:${AWS_REGION}:123456789012:function:tasks:live",
        },
    }
    clicks, archive, tasks = data["mappings"]
    assert clicks == {
        "FunctionName": "clicks-handler",
        "EventSourceArn": "arn:aws:kinesis:${AWS_REGION}:123456789012:stream/clicks-dev",
        "BatchSize": 500,  # a Number parameter whose default is the string "500"
        "MaximumBatchingWindowInSeconds": 10,  # !FindInMap [Windows, !Ref Env, Seconds]
        "StartingPosition": "AT_TIMESTAMP",
        "StartingPositionTimestamp": 1714521600,
        "ParallelizationFactor": 2,  # !If [IsProd, ...] with Env dev
        "BisectBatchOnFunctionError": True,  # "true" in the template
        "MaximumRetryAttempts": 5,
        "MaximumRecordAgeInSeconds": 3600,
        "DestinationConfig": {
            "OnFailure": {"Destination": "arn:aws:sns:${AWS_REGION}:123456789012:dev-esm-failures"}
        },
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        "TumblingWindowInSeconds": 120,
        "FilterCriteria": {
            "Filters": [{"Pattern": '{"data": {"price": [{"numeric": [">", 0]}]}}'}]
        },
        "Tags": {"team": "web"},
    }
    assert archive == {
        "FunctionName": "archiver",
        "EventSourceArn": "${SHARED_STREAM_ARN}",
        "StartingPosition": "LATEST",
        "DestinationConfig": {"OnFailure": {"Destination": "arn:aws:s3:::123456789012-archive"}},
    }
    assert tasks == {
        "FunctionName": "tasks",
        "EventSourceArn": "arn:aws:sqs:${AWS_REGION}:123456789012:tasks",
        "Enabled": False,
        "BatchSize": 10,
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        "ScalingConfig": {"MaximumConcurrency": 50},
        "Tags": {"cost": "ops"},
    }
    assert err == [
        "esm import: Resources.ArchiveMapping.Properties.KmsKeyArn: not translated: esm keeps "
        "FilterCriteria in esm.yaml: there is nothing in AWS to encrypt",
        "esm import: Resources.TasksMapping.Properties.ProvisionedPollerConfig: not "
        "translated: provisioned mode is not supported by esm",
        "esm import: Resources.KafkaMapping: skipped: a self-managed Apache Kafka source: esm "
        "reads Kinesis, DynamoDB Streams and SQS",
        "esm import: Resources.ProdOnlyMapping: skipped: its Condition IsProd is false",
        "esm import: ${AWS_REGION}: !Ref AWS::Region could not be resolved: set AWS_REGION "
        "when esm runs",
        "esm import: ${SHARED_STREAM_ARN}: !ImportValue shared-stream-arn could not be "
        "resolved: set SHARED_STREAM_ARN when esm runs",
        "esm import: 3 mapping(s) and 3 function(s) written to stdout",
    ]
    _validates(
        tmp_path,
        text,
        monkeypatch,
        {
            "AWS_REGION": "eu-west-1",
            "SHARED_STREAM_ARN": "arn:aws:kinesis:eu-west-1:123456789012:stream/shared",
        },
    )


def test_the_json_template_is_the_yaml_one() -> None:
    from esm.importer.loader import load_document

    yaml_form = load_document(str(FIXTURES / "cloudformation.yaml"))
    json_form = json.loads((FIXTURES / "cloudformation.json").read_text())
    assert yaml_form == json_form


def test_prod_condition_imports_the_conditional_mapping(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "esm.yaml"
    code, _, err, _ = _import(
        capsys,
        str(FIXTURES / "cloudformation.yaml"),
        "--param",
        "Env=prod",
        "--region",
        "eu-west-1",
        "--account",
        "123456789012",
        "-o",
        str(output),
    )
    assert code == 0
    data = yaml.safe_load(output.read_text())
    by_source = {m["EventSourceArn"]: m for m in data["mappings"]}
    assert (
        by_source["arn:aws:kinesis:eu-west-1:123456789012:stream/clicks-prod"][
            "ParallelizationFactor"
        ]
        == 10
    )
    assert (
        by_source["arn:aws:kinesis:eu-west-1:123456789012:stream/clicks-prod"][
            "MaximumBatchingWindowInSeconds"
        ]
        == 60
    )
    assert "arn:aws:sqs:eu-west-1:123456789012:prod-only" in by_source
    assert by_source["arn:aws:sqs:eu-west-1:123456789012:tasks"]["Enabled"] is True
    assert err[-1] == f"esm import: 4 mapping(s) and 3 function(s) written to {output}"
    # Only the export is left to the environment.
    monkeypatch.setenv("SHARED_STREAM_ARN", "arn:aws:kinesis:eu-west-1:123456789012:stream/s")
    assert main(["validate", "-c", str(output)]) == 0
