"""Hostile configurations get one clear answer: deep nesting, huge files, a million problems."""

from __future__ import annotations

from pathlib import Path

import pytest

from esm import config as config_module
from esm.cli import main
from esm.config import MAX_CONFIG_BYTES, MAX_PROBLEMS, load_config, parse_config
from esm.errors import ConfigError

GOOD = """
functions:
  orders: {type: http, url: "http://127.0.0.1:8080/"}
mappings:
  - FunctionName: orders
    EventSourceArn: arn:aws:kinesis:us-east-1:123456789012:stream/orders
    StartingPosition: TRIM_HORIZON
admin: {enabled: false}
state: {backend: memory}
"""

DEPTH = 5000
DEEP = {
    "flow": GOOD + "tags: " + "[" * DEPTH + "]" * DEPTH + "\n",
    # Each "- " opens a block sequence inside the previous one.
    "block": GOOD + "tags:\n  " + "- " * DEPTH + "x\n",
}

# Every YAML loader esm may run with: libyaml's when PyYAML has it, and PyYAML's own.
LOADERS: list[type[config_module._PyLoader | config_module._CLoader]] = [config_module._PyLoader]
if config_module._YAML_LOADER is not config_module._PyLoader:
    LOADERS.append(config_module._YAML_LOADER)


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "esm.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("loader", LOADERS, ids=lambda loader: loader.__name__)
@pytest.mark.parametrize("shape", sorted(DEEP))
def test_deep_nesting_is_one_problem_with_either_loader(
    shape: str, loader: type[config_module._PyLoader]
) -> None:
    with pytest.raises(ConfigError) as raised:
        config_module._load_yaml(DEEP[shape], "esm.yaml", loader)

    [problem] = raised.value.problems
    assert problem.startswith("esm.yaml:")
    assert problem.endswith(": invalid YAML: nested too deeply")


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("shape", sorted(DEEP))
def test_deep_nesting_exits_1_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, shape: str
) -> None:
    path = _write(tmp_path, DEEP[shape])

    assert main([command, "-c", path]) == 1

    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 2, captured.err
    assert lines[0] == "configuration invalid: 1 problem(s)"
    assert lines[1].startswith(f"  - {path}:")
    assert lines[1].endswith(": invalid YAML: nested too deeply")


def _unknown_keys(count: int) -> str:
    return GOOD + "log:\n" + "".join(f"  k{i}: 1\n" for i in range(count))


def test_problems_past_the_first_fifty_are_counted_not_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = 20_000  # about 250 KB; every key once took a difflib search and a line of output
    path = _write(tmp_path, _unknown_keys(keys))

    assert main(["validate", "-c", path]) == 1

    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"configuration invalid: {keys} problem(s)"
    assert (
        lines[1]
        == "  - log: unknown key 'k0' (known keys: format, level, summary_interval_seconds)"
    )
    assert len(lines) == 1 + MAX_PROBLEMS + 1
    assert lines[-1] == f"  ... and {keys - MAX_PROBLEMS} more"


def test_the_count_covers_every_kind_of_problem() -> None:
    # Three duplicate keys (found while reading the YAML, so listed first), then as many
    # unknown keys as are listed in full: three are left over.
    text = _unknown_keys(MAX_PROBLEMS) + "".join(f"  k{i}: 1\n" for i in range(3))
    with pytest.raises(ConfigError) as raised:
        parse_config(text, {})

    error = raised.value
    assert len(error.problems) == MAX_PROBLEMS
    assert [p.split(": ", 1)[1] for p in error.problems[:3]] == [
        f"duplicate key 'k{i}' (first given on line {11 + i}; YAML would keep only the last)"
        for i in range(3)
    ]
    assert (
        error.problems[3]
        == "log: unknown key 'k0' (known keys: format, level, summary_interval_seconds)"
    )
    assert error.omitted == 3
    assert str(error).endswith("\nand 3 more")


def test_a_file_over_one_mebibyte_is_refused_unread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "esm.yaml"
    with path.open("w") as file:
        file.write(_unknown_keys(0))
        file.write("# padding\n" * (MAX_CONFIG_BYTES // 10))

    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert raised.value.problems == [
        f"{path}: larger than 1 MiB: a configuration may be at most 1048576 bytes "
        "(what a Kubernetes ConfigMap holds)"
    ]
    with pytest.raises(ConfigError):
        parse_config(path.read_text(), {})

    assert main(["validate", "-c", str(path)]) == 1
    assert len(capsys.readouterr().err.splitlines()) == 2


def test_an_endless_file_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-c", "/dev/zero"]) == 1
    assert "larger than 1 MiB" in capsys.readouterr().err


def test_a_huge_value_is_shown_short() -> None:
    # An alias repeated makes a structure of a million strings from a few lines.
    text = GOOD.replace("state: {backend: memory}", "state: {backend: memory, path: *l5}")
    lines = ["a: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 6)]
    text = "\n".join(lines) + "\n" + text

    with pytest.raises(ConfigError) as raised:
        parse_config(text, {})

    [problem] = [p for p in raised.value.problems if p.startswith("state.path")]
    assert problem.startswith("state.path: must be a valid string, got [[[[[...], [...], ")
    assert problem.endswith("...")
    assert len(problem) < 200


def test_a_large_file_cut_inside_a_character_is_still_too_large(tmp_path: Path) -> None:
    head = GOOD + "#"
    # The limit falls on the first byte of a two-byte "é": reading stops inside it.
    if (MAX_CONFIG_BYTES - len(head)) % 2:
        head += " "
    path = tmp_path / "esm.yaml"
    path.write_text(head + "é" * MAX_CONFIG_BYTES, encoding="utf-8")

    with pytest.raises(ConfigError) as raised:
        load_config(path)

    [problem] = raised.value.problems
    assert "larger than 1 MiB" in problem
