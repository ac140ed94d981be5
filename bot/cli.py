"""`python -m bot ...`: parse the command line, and run the console, the platforms, workflow checks
and graphs, eval and doctor (the commands that read the store are in `bot.records`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.handlers
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bot import records
from bot.adapters.console import COMMANDS, Console, ConsolePlatform, new_thread_name
from bot.adapters.terminal import Style, Terminal
from bot.engine import mcp
from bot.engine.errors import FileError, WorkflowError
from bot.engine.graph import mermaid
from bot.engine.loader import load_workflow
from bot.models.select import describe, make_model, model_name, require_real_model
from bot.observe.logs import formatter
from bot.records import UsageError, database
from bot.runtime import monitoring, open_service, tracing
from bot.service import ConversationService
from bot.settings import Settings, SettingsError, load_settings
from bot.store import StoreError, is_postgres

_TRACED = ("console", "eval", "slack", "discord")  # the commands that run turns


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    console = commands.add_parser("console", help="talk to the bot in this terminal")
    console.add_argument("--workflow", type=Path, help="workflow YAML (default: BOT_WORKFLOW)")
    console.add_argument("--database", help="SQLite file (default: BOT_DATABASE)")
    console.add_argument("--thread", help="resume (or name) this conversation thread")
    console.add_argument(
        "--log-file",
        type=Path,
        metavar="FILE",
        help="where log lines go (default: console.log beside the SQLite database)",
    )
    console.add_argument(
        "--verbose", action="store_true", help="show log lines here, on stderr, not in a file"
    )
    # The Makefile's `chat` target says so, to be told to resume with `make chat ARGS=...`.
    console.add_argument("--from-make", action="store_true", help=argparse.SUPPRESS)

    check = commands.add_parser("check", help="validate workflow files; exit 1 on errors")
    check.add_argument("workflows", type=Path, nargs="+", metavar="WORKFLOW")

    graph = commands.add_parser("graph", help="print a workflow as a Mermaid flowchart")
    graph.add_argument("workflow", type=Path, metavar="WORKFLOW")

    evaluate = commands.add_parser(
        "eval", help="run a cases file through a workflow on the configured model; report routing"
    )
    evaluate.add_argument("workflow", type=Path, metavar="WORKFLOW")
    evaluate.add_argument("cases", type=Path, metavar="CASES")
    evaluate.add_argument("--concurrency", type=int, default=1, help="cases run at once (1)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument(
        "--min-accuracy", type=float, metavar="X", help="exit 1 when accuracy (0-1) is below X"
    )

    commands.add_parser("slack", help="serve Slack (Socket Mode with SLACK_APP_TOKEN, else HTTP)")
    discord = commands.add_parser("discord", help="serve Discord (needs message content intent)")
    discord.add_argument("--shard-id", type=int, help="this process's shard (0-based)")
    discord.add_argument("--shard-count", type=int, help="how many shards all processes run")

    sessions = commands.add_parser("sessions", help="list stored conversations")
    sessions.add_argument("--database", help="SQLite file (default: BOT_DATABASE)")
    sessions.add_argument("--limit", type=int, default=50)

    stats = commands.add_parser(
        "stats", help="per workflow: handoffs, agents reached, model usage, cases, turns"
    )
    stats.add_argument("--database", help="SQLite file (default: BOT_DATABASE)")
    stats.add_argument("--workflow", metavar="NAME", help="only this workflow")
    stats.add_argument("--days", type=float, help="only conversations opened in the last N days")
    stats.add_argument("--json", action="store_true", help="print one JSON object")

    commands.add_parser("doctor", help="check configuration, database, model and platforms")

    migrate = commands.add_parser("migrate", help="copy conversations from SQLite to PostgreSQL")
    migrate.add_argument("--from", dest="source", required=True, help="the SQLite file")
    migrate.add_argument("--to", dest="target", required=True, help="a postgresql:// URL")

    cases = commands.add_parser("cases", help="list moderation cases")
    cases.add_argument("--database", help="SQLite file (default: BOT_DATABASE)")
    cases.add_argument("--status", choices=("open", "approved", "rejected", "closed"))
    cases.add_argument("--limit", type=int, default=50)

    dead = commands.add_parser(
        "dead-letters", help="list posts the platform refused for good and that were set aside"
    )
    dead.add_argument("--database", help="SQLite file (default: BOT_DATABASE)")
    dead.add_argument("--limit", type=int, default=50)
    dead.add_argument("--text", action="store_true", help="show each post's text too")

    export = commands.add_parser("export", help="print a conversation as Markdown or JSON")
    export.add_argument("session", metavar="SESSION", help="session id, or a thread name")
    export.add_argument("--database", help="SQLite file (default: BOT_DATABASE)")
    export.add_argument("--format", choices=("markdown", "json"), default="markdown")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the process exit code."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        if args.command != "console":  # the console keeps log lines out of the chat
            handler = logging.StreamHandler()
            handler.setFormatter(formatter(settings.bot_log_format))
            logging.basicConfig(level=settings.bot_log_level.upper(), handlers=[handler])
        if args.command in _TRACED:
            with tracing(settings):
                return _run(args, settings)
        return _run(args, settings)
    except (FileError, SettingsError, StoreError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run(args: argparse.Namespace, settings: Settings) -> int:
    """The command `args` names."""
    match args.command:
        case "check":
            return _check(args.workflows)
        case "graph":
            sys.stdout.write(mermaid(load_workflow(args.workflow)))
            return 0
        case "console":
            return asyncio.run(_console(settings, args))
        case "eval":
            return asyncio.run(_eval(settings, args))
        case "slack":
            return asyncio.run(_slack(settings))
        case "discord":
            return asyncio.run(_discord(settings, args.shard_id, args.shard_count))
        case "sessions":
            return asyncio.run(records.sessions(settings, args))
        case "export":
            return asyncio.run(records.export(settings, args))
        case "cases":
            return asyncio.run(records.cases(settings, args))
        case "dead-letters":
            return asyncio.run(records.dead_letters(settings, args))
        case "stats":
            return asyncio.run(records.stats(settings, args))
        case "doctor":
            return asyncio.run(_doctor(settings))
        case "migrate":
            return asyncio.run(records.migrate(args.source, args.target))
    return 2


def _check(paths: Sequence[Path]) -> int:
    failed = False
    for path in paths:
        try:
            workflow = load_workflow(path)
        except WorkflowError as exc:
            failed = True
            print(str(exc), file=sys.stderr)
            continue
        for warning in workflow.warnings:
            print(f"{path}: warning: {warning}", file=sys.stderr)
        print(f"{path}: ok ({workflow.shape})")
        for line in asyncio.run(mcp.describe(workflow)):  # each declared MCP server, started once
            print(f"{path}: {line}")
            failed |= line.startswith("FAIL")
    return 1 if failed else 0


async def _console(settings: Settings, args: argparse.Namespace) -> int:
    model = make_model(settings)
    tty = sys.stdout.isatty()
    style = Style(colour=tty and settings.colour)
    platform = ConsolePlatform(sys.stdout, style, live=tty, stderr=sys.stderr)
    _console_logging(settings, args, platform)
    async with open_service(
        settings, platform, workflow=args.workflow, database=args.database, model=model
    ) as service:
        platform.say(
            f"Switchboard console: workflow {service.workflow.name}, {describe(model, settings)}."
        )
        for warning in service.workflow.warnings:  # logged too, but the log is in a file
            print(f"warning: {warning}", file=sys.stderr, flush=True)
        console = Console(
            service,
            platform,
            thread=args.thread or new_thread_name(),
            terminal=Terminal(sys.stdin, style.prompt("you> "), COMMANDS),
            resume=_resume_command(settings, args),
        )
        try:
            await console.run()
        finally:
            await _stop_now(service)
    return 0


def _console_logging(
    settings: Settings, args: argparse.Namespace, platform: ConsolePlatform
) -> None:
    """Log lines never land in the chat: they go to a file (`--log-file`, else console.log
    beside the SQLite database), or under `--verbose` to stderr, beside it. At INFO unless
    BOT_LOG_LEVEL says otherwise, so the file keeps the audit trail (cases, moderators)."""
    explicit = "bot_log_level" in settings.model_fields_set
    level = settings.bot_log_level.upper() if explicit else "INFO"
    handler: logging.Handler
    if args.verbose:
        handler = _Aside(platform)
    else:
        path = args.log_file or _log_beside(database(settings, args.database))
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=1_000_000, backupCount=1, encoding="utf-8", delay=True
        )
    handler.setFormatter(formatter(settings.bot_log_format))
    logging.basicConfig(level=level, handlers=[handler])


def _log_beside(database: str) -> Path:
    folder = Path("data") if is_postgres(database) else Path(database).parent
    return folder / "console.log"


class _Aside(logging.Handler):
    """`--verbose`: each log line on stderr, with the console's status line out of its way."""

    def __init__(self, platform: ConsolePlatform) -> None:
        super().__init__()
        self.platform = platform

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.platform.aside(self.format(record))
        except Exception:
            self.handleError(record)


def _resume_command(settings: Settings, args: argparse.Namespace) -> Callable[[str], str]:
    """The command that resumes a thread the way the console was started: `make chat ARGS=...`
    from the Makefile, `switchboard console ...` from the installed command, else
    `python -m bot console ...`. An option that only repeats what the
    settings say anyway (the Makefile's workflow and database) is left out."""
    given: list[str] = []
    if args.workflow is not None and args.workflow != settings.bot_workflow:
        given += ["--workflow", str(args.workflow)]
    if args.database is not None and args.database != settings.bot_database:
        given += ["--database", args.database]

    def command(thread: str) -> str:
        words = shlex.join([*given, "--thread", thread])
        if not args.from_make:
            program = "switchboard" if Path(sys.argv[0]).name == "switchboard" else "python -m bot"
            return f"{program} console {words}"
        plain = not any(char in words for char in '"$`\\')
        return f'make chat ARGS="{words}"' if plain else f"make chat ARGS={shlex.quote(words)}"

    return command


async def _stop_now(service: ConversationService) -> None:
    """Stop what still runs (Ctrl-C or Ctrl-D in the middle of a turn) before the store closes:
    the turn's steps are stored already, and the thread's next message goes on with it. The
    console's process runs nothing else, so every other task is the service's."""
    await service.stop(0)
    me = asyncio.current_task()
    rest = [task for task in asyncio.all_tasks() if task is not me]
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)


async def _eval(settings: Settings, args: argparse.Namespace) -> int:
    from bot.evals import Report, load_cases, progress_bar, run_cases

    if args.min_accuracy is not None and not 0 <= args.min_accuracy <= 1:
        raise UsageError("--min-accuracy is a fraction from 0 to 1, e.g. 0.9")
    if args.concurrency < 1:
        raise UsageError("--concurrency must be 1 or more")
    workflow = load_workflow(args.workflow)
    cases = load_cases(args.cases, workflow)
    model = make_model(settings)
    total = sum(len(case.messages) for case in cases)
    progress = progress_bar(total, sys.stderr.write) if sys.stderr.isatty() else lambda n: None
    runs = await run_cases(
        settings,
        args.workflow,
        cases,
        concurrency=args.concurrency,
        model=model,
        progress=progress,
    )
    report = Report(workflow.name, model_name(model, settings), runs)
    print(report.to_json() if args.json else report.to_text())
    if args.min_accuracy is not None and report.accuracy < args.min_accuracy:
        print(
            f"accuracy {report.accuracy:.1%} is below --min-accuracy {args.min_accuracy:.1%}",
            file=sys.stderr,
        )
        return 1
    return 0


async def _discord(settings: Settings, shard_id: int | None, shard_count: int | None) -> int:
    from bot.adapters.discord import DiscordConfig, SwitchboardClient, serve

    if (shard_id is None) != (shard_count is None):
        raise UsageError("give --shard-id and --shard-count together")
    if shard_id is not None and shard_count is not None and not 0 <= shard_id < shard_count:
        raise UsageError(f"--shard-id must be from 0 to {shard_count - 1}")
    config = DiscordConfig.from_settings(settings, shard_id=shard_id, shard_count=shard_count)
    require_real_model(settings, "discord")
    client = SwitchboardClient(config)
    async with (
        open_service(settings, client) as service,
        monitoring(
            settings, service, lambda: client.is_ready() and bool(client.ws and client.ws.open)
        ),
    ):
        await serve(service, client)
    return 0


async def _slack(settings: Settings) -> int:
    from bot.adapters.slack import SlackConfig, serve, slack_platform

    config = SlackConfig.from_settings(settings)
    require_real_model(settings, "slack")
    platform = slack_platform(config)
    async with (
        open_service(settings, platform) as service,
        monitoring(settings, service) as probe,  # `serve` says how to see it is connected
    ):
        await serve(service, platform, config, probe)
    return 0


async def _doctor(settings: Settings) -> int:
    from bot.doctor import diagnose

    findings = await diagnose(settings)
    for finding in findings:
        print(finding)
    failed = [finding for finding in findings if not finding.ok]
    print("All checks passed." if not failed else f"{len(failed)} check(s) failed.")
    return 1 if failed else 0
