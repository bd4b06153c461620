"""The `esm` command line: argument parsing only; the work is done by daemon, config, demo
and the importer."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

from esm import __version__
from esm.errors import ConfigError, EsmError
from esm.redact import redact

if TYPE_CHECKING:
    from esm.config import EsmConfig


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esm",
        description="A self-hosted AWS Lambda event source mapping.",
    )
    parser.add_argument("--version", action="version", version=f"esm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the mappings of a configuration until stopped")
    run.add_argument("-c", "--config", required=True, help="configuration file (YAML)")

    validate = commands.add_parser("validate", help="check a configuration and summarize it")
    validate.add_argument("-c", "--config", required=True, help="configuration file (YAML)")

    commands.add_parser(
        "schema", help="print the JSON Schema of esm.yaml (for editors to complete and check it)"
    )

    copy = commands.add_parser(
        "copy-checkpoints",
        help="copy a sqlite state file's checkpoints into the lease table of state.backend "
        "dynamodb, so that one esm can grow into several without replay",
    )
    copy.add_argument("-c", "--config", required=True, help="configuration file (YAML)")
    copy.add_argument(
        "--from", dest="source", required=True, help="the sqlite state file (state.path)"
    )

    status = commands.add_parser(
        "status",
        help="show what a running esm is doing: each mapping's state, shards or pollers, lag, "
        "in-flight batches and last error",
    )
    _admin_arguments(status)
    status.add_argument("--json", action="store_true", help="print /status's JSON as it is")
    status.add_argument(
        "--watch",
        type=float,
        nargs="?",
        const=2.0,
        metavar="SECONDS",
        help="redraw every SECONDS (default 2) until interrupted",
    )

    _add_import(commands)

    for operation, what in (
        ("pause", "stop a running esm's mapping reading (checkpoints and leases are kept)"),
        ("resume", "let a paused mapping read again from where it was"),
    ):
        command = commands.add_parser(operation, help=what)
        command.add_argument("mapping", metavar="MAPPING", help="the mapping's name or UUID")
        _admin_arguments(command)
        command.add_argument(
            "--token", help="the admin token (default: $ESM_ADMIN_TOKEN), as admin.token says"
        )

    _add_seek(commands)
    _add_redrive(commands)

    reload = commands.add_parser(
        "reload",
        help="make a running esm read its configuration file again (as SIGHUP does): "
        "changed mappings restart, the others go on",
    )
    _admin_arguments(reload)
    reload.add_argument(
        "--token", help="the admin token (default: $ESM_ADMIN_TOKEN), as admin.token says"
    )

    demo = commands.add_parser(
        "demo",
        help="process a stream and a queue on an embedded local AWS emulator (no account needed)",
    )
    demo.add_argument("--records", type=int, default=300, help="records to write (default 300)")
    demo.add_argument("--shards", type=int, default=2, help="shards of the stream (default 2)")
    demo.add_argument(
        "--batch-size", type=int, default=50, help="BatchSize of the stream mapping (default 50)"
    )
    demo.add_argument(
        "--messages", type=int, default=100, help="messages to send to the queue (default 100)"
    )
    return parser


def _admin_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        help="the admin address of the esm (default: $ESM_ADMIN_URL, else the admin.listen of "
        "--config, else http://127.0.0.1:9464)",
    )
    parser.add_argument("-c", "--config", help="configuration file: where its admin server is")


def _add_seek(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    seek = commands.add_parser(
        "seek",
        help="move a stream mapping's position: a running esm through its admin API, a "
        "stopped one in its state store",
    )
    seek.add_argument("mapping", metavar="MAPPING", help="the mapping's name or UUID")
    seek.add_argument(
        "--to",
        required=True,
        metavar="POSITION",
        help="TRIM_HORIZON, LATEST, AT_TIMESTAMP=TIME (ISO 8601 or epoch seconds) or "
        "AT_SEQUENCE_NUMBER=SEQUENCE (with --shard)",
    )
    seek.add_argument("--shard", help="move this shard alone (default: every shard)")
    _admin_arguments(seek)
    seek.add_argument(
        "--token", help="the admin token (default: $ESM_ADMIN_TOKEN), as admin.token says"
    )


def _add_redrive(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    redrive = commands.add_parser(
        "redrive",
        help="invoke the function again with the batches an on-failure destination recorded, "
        "deleting each failure record once its batch succeeds",
    )
    redrive.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="DESTINATION",
        help="the on-failure destination: an SQS queue ARN (or URL), or an S3 bucket ARN or "
        "s3://BUCKET/PREFIX",
    )
    redrive.add_argument("-c", "--config", required=True, help="configuration file (YAML)")
    redrive.add_argument(
        "--mapping", help="redrive this mapping's failure records only (name or UUID)"
    )
    redrive.add_argument(
        "--dry-run",
        action="store_true",
        help="read the failure records and the stream, invoke nothing and delete nothing",
    )
    redrive.add_argument(
        "--delete-expired",
        action="store_true",
        help="also delete failure records none of whose records the stream still holds",
    )
    redrive.add_argument("--json", action="store_true", help="print the report as JSON")


def _add_import(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    imports = commands.add_parser(
        "import",
        help="write an esm.yaml from a SAM or CloudFormation template or the output of "
        "aws lambda list-event-source-mappings",
    )
    imports.add_argument("file", metavar="FILE", help="template (YAML or JSON) or listing")
    imports.add_argument("-o", "--output", help="write esm.yaml here (default: stdout)")
    imports.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a template parameter or pseudo parameter (AWS::Region=eu-west-1); repeatable",
    )
    imports.add_argument("--region", help="AWS::Region, unless --param gives it")
    imports.add_argument("--account", help="AWS::AccountId, unless --param gives it")
    imports.add_argument(
        "--function-type",
        default="http",
        metavar="TYPE",
        help="the backend of every function: http (default), python, command, lambda, runtime",
    )
    imports.add_argument(
        "--url",
        default="http://127.0.0.1:8080/",
        help="http functions' url; {function} is replaced by the function's name "
        "(default http://127.0.0.1:8080/)",
    )
    imports.add_argument(
        "--handler", help="python functions' handler (module:function; {function} as in --url)"
    )
    imports.add_argument(
        "--command",
        dest="function_command",
        help="command functions' command ({function} as in --url)",
    )


def _print_problems(error: ConfigError) -> None:
    total = len(error.problems) + error.omitted
    print(f"configuration invalid: {total} problem(s)", file=sys.stderr)
    for problem in error.problems:
        print(redact(f"  - {problem}"), file=sys.stderr)
    if error.omitted:
        print(f"  ... and {error.omitted} more", file=sys.stderr)


def _load(config_path: str) -> EsmConfig | None:
    """The configuration, checked as start-up would check it; None once the problems are
    printed. `run` and `validate` share it, so both say the same and exit 1."""
    from esm.config import load_config
    from esm.preflight import check_functions, check_tracing

    try:
        config = load_config(config_path)
    except ConfigError as error:
        _print_problems(error)
        return None
    problems = check_tracing(config) + anyio.run(check_functions, config)
    if problems:
        _print_problems(ConfigError(problems))
        return None
    return config


def _run(config_path: str) -> int:
    from esm.daemon import Daemon
    from esm.gc_tuning import freeze_startup_heap, tune_collector
    from esm.log import configure_logging

    config = _load(config_path)
    if config is None:
        return 1
    configure_logging(config.log.format, config.log.level)
    tune_collector()
    daemon = Daemon(config, config_path=config_path)

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            # Every mapping is set up: what exists now lives as long as esm does.
            freeze_startup_heap()

    try:
        anyio.run(run)
    except (EsmError, OSError, BaseExceptionGroup) as error:
        # Settings that only fail when used (an admin port already taken, an unwritable
        # state file): one clear line each, no traceback.
        leaves = _leaves(error)
        if not all(isinstance(e, EsmError | OSError) for e in leaves):
            raise
        for leaf in leaves:
            # esm's own errors name what failed; a bare OSError needs its type to make sense.
            text = str(leaf) if isinstance(leaf, EsmError) else f"{type(leaf).__name__}: {leaf}"
            print(redact(f"esm: {text}"), file=sys.stderr)
        return 1
    return 0


def _leaves(error: BaseException) -> list[BaseException]:
    """The errors inside (possibly nested) exception groups raised by task groups."""
    if not isinstance(error, BaseExceptionGroup):
        return [error]
    return [leaf for inner in error.exceptions for leaf in _leaves(inner)]


def _validate(config_path: str) -> int:
    from esm.config import describe_config

    config = _load(config_path)
    if config is None:
        return 1
    print(redact(describe_config(config)))
    return 0


def _schema() -> int:
    import json

    from esm.schema import config_schema

    print(json.dumps(config_schema(), indent=2))
    return 0


def _copy_checkpoints(config_path: str, source: str) -> int:
    from esm.state_copy import copy_state_file

    config = _load(config_path)
    if config is None:
        return 1
    try:
        report = anyio.run(copy_state_file, config, source)
    except ConfigError as error:
        _print_problems(error)
        return 1
    except EsmError as error:
        print(redact(f"esm: {error}"), file=sys.stderr)
        return 1
    print("\n".join(report.lines()))
    return 0


def _admin_target(url: str | None, config_path: str | None) -> tuple[str, EsmConfig | None] | None:
    """The admin address to ask, and the configuration when it came from one; None once a
    configuration's problems are printed."""
    from esm.admin_client import admin_url

    config = None
    if config_path is not None and not url:
        config = _load_quietly(config_path)
        if config is None:
            return None
    return admin_url(url, config), config


def _status(url: str | None, config_path: str | None, as_json: bool, watch: float | None) -> int:
    from esm.admin_client import AdminError, show_status

    if watch is not None and watch <= 0:
        print("esm: --watch takes a number of seconds above 0", file=sys.stderr)
        return 2
    target = _admin_target(url, config_path)
    if target is None:
        return 1
    try:
        return show_status(target[0], as_json=as_json, watch=watch)
    except AdminError as error:
        print(f"esm: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def _operate(args: argparse.Namespace) -> int:
    from esm.admin_client import AdminError, operate, pause_line

    target = _admin_target(args.url, args.config)
    if target is None:
        return 1
    url, config = target
    token = args.token or (config.admin.token if config is not None else None)
    try:
        print(pause_line(operate(url, args.mapping, args.command, token), args.mapping))
    except AdminError as error:
        print(f"esm: {error}", file=sys.stderr)
        return 1
    return 0


def _reload(args: argparse.Namespace) -> int:
    import os

    from esm.admin_client import TOKEN_VARIABLE, AdminError, request

    target = _admin_target(args.url, args.config)
    if target is None:
        return 1
    url, config = target
    token = args.token or (config.admin.token if config is not None else None)
    grace = config.delivery.shutdown_grace_seconds if config is not None else 30.0
    try:
        # Restarting changed mappings waits for their batches in flight, as a shutdown does.
        answer = request(
            url,
            "/reload",
            method="POST",
            body={},
            token=token or os.environ.get(TOKEN_VARIABLE),
            timeout=grace + 30,
        )
    except AdminError as error:
        print(f"esm reload: {error}", file=sys.stderr)
        return 1
    if not isinstance(answer, dict):
        print(f"esm reload: {url}: unexpected answer", file=sys.stderr)
        return 1
    parts = [
        f"{what} {', '.join(answer[what])}"
        for what in ("added", "removed", "restarted")
        if answer.get(what)
    ]
    unchanged = len(answer.get("unchanged") or [])
    print(f"reloaded: {'; '.join(parts) or 'no mapping changed'}; {unchanged} unchanged")
    return 0


def _seek(args: argparse.Namespace) -> int:
    """Through the admin API of the esm that runs the mapping; when none answers and a
    configuration is given, in the state store the configuration names."""
    import os

    from esm.admin_client import URL_VARIABLE, AdminError, AdminUnreachable, operate
    from esm.engine.seek import SeekError, describe_target, parse_target

    try:
        target = parse_target(args.to)
    except SeekError as error:
        print(f"esm seek: {error}", file=sys.stderr)
        return 2
    remote = args.url or os.environ.get(URL_VARIABLE)
    found = _admin_target(args.url, args.config)
    if found is None:
        return 1
    url, config = found
    token = args.token or (config.admin.token if config is not None else None)
    arguments = {"to": args.to, **({"shard": args.shard} if args.shard else {})}
    try:
        if config is None or remote or config.admin.enabled:
            try:
                # A seek waits for in-flight batches, as a shutdown does.
                grace = config.delivery.shutdown_grace_seconds if config else 30.0
                answer = operate(url, args.mapping, "seek", token, arguments, timeout=grace + 30)
            except AdminUnreachable:
                if config is None or remote:
                    raise
                print(
                    f"esm seek: no esm answers at {url}: writing the state store", file=sys.stderr
                )
            else:
                shards = answer.get("shards") or []
                print(
                    f"mapping {answer.get('mapping', args.mapping)}: {len(shards)} shard(s) "
                    f"moved to {answer.get('to', describe_target(target))}; reading again"
                )
                return 0
        return _seek_stopped(config, args.mapping, target, args.shard)
    except (AdminError, SeekError) as error:
        print(f"esm seek: {error}", file=sys.stderr)
        return 1


def _seek_stopped(config: EsmConfig, mapping: str, target: Any, shard: str | None) -> int:
    from esm.engine.seek import describe_target
    from esm.offline_seek import seek_stopped

    try:
        shards = anyio.run(seek_stopped, config, mapping, target, shard)
    except EsmError as error:
        print(redact(f"esm seek: {error}"), file=sys.stderr)
        return 1
    print(
        f"mapping {mapping}: {len(shards)} shard(s) set to {describe_target(target)} in the "
        "state store; the next esm run reads from there"
    )
    return 0


def _redrive(args: argparse.Namespace) -> int:
    import json

    from esm.log import configure_logging
    from esm.redrive.command import redrive

    config = _load(args.config)
    if config is None:
        return 1
    # The report is the output; only warnings and errors are logged, to stderr.
    configure_logging(config.log.format, "warning")

    def show(item: Any) -> None:
        if not args.json:
            print(redact(item.line()), flush=True)

    try:
        report = anyio.run(
            partial(
                redrive,
                config,
                args.source,
                mapping=args.mapping,
                dry_run=args.dry_run,
                delete_expired=args.delete_expired,
                on_item=show,
            )
        )
    except (ValueError, LookupError, EsmError) as error:
        print(redact(f"esm redrive: {error}"), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.summary())
    return 0 if report.clean else 1


def _load_quietly(config_path: str) -> EsmConfig | None:
    """The configuration for its addresses only: no function is checked."""
    from esm.config import load_config

    try:
        return load_config(config_path)
    except ConfigError as error:
        _print_problems(error)
        return None


def _import(args: argparse.Namespace) -> int:
    from esm.importer import FunctionOptions, ImportFailure, ImportOptions, import_file

    parameters: dict[str, str] = {}
    for item in args.param:
        name, equals, value = item.partition("=")
        if not equals or not name:
            print(f"esm import: --param {item!r}: expected NAME=VALUE", file=sys.stderr)
            return 1
        parameters[name] = value
    options = ImportOptions(
        parameters=parameters,
        region=args.region,
        account=args.account,
        functions=FunctionOptions(
            type=args.function_type,
            url=args.url,
            handler=args.handler,
            command=args.function_command,
        ),
    )
    try:
        result = import_file(args.file, options)
    except ImportFailure as error:
        for line in error.untranslated:
            print(f"esm import: {line}", file=sys.stderr)
        print(f"esm import: {error}", file=sys.stderr)
        return 1
    try:
        _write(args.output, result.text)
    except OSError as error:
        print(f"esm import: {args.output}: cannot write: {error.strerror}", file=sys.stderr)
        return 1
    for line in result.report_lines():
        print(f"esm import: {line}", file=sys.stderr)
    print(
        f"esm import: {result.mappings} mapping(s) and {result.functions} function(s) "
        f"written to {args.output or 'stdout'}",
        file=sys.stderr,
    )
    return 0


def _write(path: str | None, text: str) -> None:
    if path is None:
        sys.stdout.write(text)
        return
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        return _run(args.config)
    if args.command == "validate":
        return _validate(args.config)
    if args.command == "schema":
        return _schema()
    if args.command == "status":
        return _status(args.url, args.config, args.json, args.watch)
    if args.command == "copy-checkpoints":
        return _copy_checkpoints(args.config, args.source)
    if args.command in ("pause", "resume"):
        return _operate(args)
    if args.command == "seek":
        return _seek(args)
    if args.command == "reload":
        return _reload(args)
    if args.command == "redrive":
        return _redrive(args)
    if args.command == "import":
        return _import(args)
    from esm.demo import run_demo

    return run_demo(
        records=args.records,
        shards=args.shards,
        batch_size=args.batch_size,
        messages=args.messages,
    )


if __name__ == "__main__":
    sys.exit(main())
