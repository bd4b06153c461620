"""docs/adding-a-backend.md: its example module is the one esm ships, and it works."""

from __future__ import annotations

import re
import time
from pathlib import Path

import orjson
import pytest

from esm import registry
from esm.config import describe_config, parse_config
from esm.errors import ConfigError
from esm.examples import jsonl_backend
from esm.metrics import Metrics
from esm.model import Invocation, ResultKind
from esm.protocols import FunctionBackend

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "adding-a-backend.md"


def test_the_page_shows_the_example_module_exactly() -> None:
    text = PAGE.read_text(encoding="utf-8")
    shown = re.search(r"<!-- example: (\S+) -->\n```python\n(.*?)```", text, re.S)
    assert shown, "the page shows a module"
    assert shown[2] == (ROOT / shown[1]).read_text(encoding="utf-8")
    assert shown[1] == "esm/examples/jsonl_backend.py"


def _config(tmp_path: Path, **settings: object) -> str:
    extra = "".join(f", {key}: {value}" for key, value in settings.items())
    return f"""
functions:
  archive: {{type: example-jsonl, path: "{tmp_path / "events.jsonl"}"{extra}}}
mappings:
  - FunctionName: archive
    EventSourceArn: arn:aws:sqs:us-east-1:123456789012:orders
"""


def test_the_example_type_is_validated_by_its_own_model(tmp_path: Path) -> None:
    config = parse_config(_config(tmp_path, max_concurrency=1), environ={})
    settings = config.functions["archive"]
    assert isinstance(settings, jsonl_backend.JsonLinesSettings)
    assert "function archive: example-jsonl " in describe_config(config)
    with pytest.raises(ConfigError) as raised:
        parse_config(_config(tmp_path, max_line_bytes=5), environ={})
    assert raised.value.problems == [
        "functions.archive.max_line_bytes: 5 is out of range: must be between 1024 and 6291456"
    ]


@pytest.mark.anyio
async def test_the_example_backend_appends_each_event(tmp_path: Path) -> None:
    config = parse_config(_config(tmp_path), environ={})

    async def no_client(service: str, region: str) -> object:
        raise AssertionError

    async def no_backend(name: str) -> FunctionBackend:
        raise AssertionError

    context = registry.BackendContext("archive", "us-east-1", no_client, Metrics(), no_backend)
    backend = await registry.build_backend(context, config.functions["archive"])
    for n in range(2):
        event = orjson.dumps({"Records": [{"messageId": str(n)}]})
        invocation = Invocation(
            payload=event,
            request_id=f"r{n}",
            function_name="archive",
            function_arn="arn:aws:lambda:us-east-1:123456789012:function:archive",
            timeout=3,
            deadline=time.time() + 3,
        )
        result = await backend.invoke(invocation)
        assert result.kind is ResultKind.SUCCESS
    await backend.aclose()
    lines = (tmp_path / "events.jsonl").read_bytes().splitlines()
    assert [orjson.loads(line)["Records"][0]["messageId"] for line in lines] == ["0", "1"]
