"""Tools from MCP servers, through the official `mcp` SDK.

`connected(workflow)` starts each distinct server the workflow declares once (however many agents
declare it), lists its tools, and yields the workflow with every agent's MCP tools added to its
own; on the way out it closes every session and stops every server process. A server that cannot
start is logged by its label (never its `env`: it may hold secrets) and left out: its agents keep
their other tools and the bot still starts.

An `McpTool` calls its server under a timeout. A server that is down, slow, crashed or failing,
and arguments that are not JSON, all become an error result the model reads, never an exception.
A connection found closed is opened again on the next call, once (then at most every
`RETRY_S` seconds). A stdio server's stderr goes to the log, line by line, not to the terminal.

The SDK is imported only where a server is declared: importing it takes half a second.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import ValidationError

from bot.engine.agents import Agent, McpServer
from bot.engine.errors import EngineError
from bot.engine.text import bounded, clean
from bot.engine.tools import DEFAULT_TIMEOUT_S, ToolOutput, read_arguments
from bot.engine.workflow import Workflow
from bot.models.base import ToolSpec

if TYPE_CHECKING:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters
    from mcp_types import CallToolResult, ContentBlock
    from mcp_types import Tool as ServerTool

log = logging.getLogger(__name__)
for _chatty in ("httpx", "httpx2"):  # their INFO lines print whole URLs, credentials and all
    logging.getLogger(_chatty).setLevel(logging.WARNING)

START_TIMEOUT_S = 10.0  # to start a server (or reach it) and list its tools
RETRY_S = 30.0  # after a failed reconnect, calls fail at once for this long
MAX_DESCRIPTION = 1_000
MAX_RESULT = 16_000
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # what OpenAI accepts as a tool name
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")
_MAX_PAGES = 100  # of a tool listing: a server that pages forever cannot hang the start
_GRACE_S = 5.0  # past a call's timeout, for the SDK's own timeout to answer first


class McpError(EngineError):
    """An MCP server could not be started, reached or listed; the message says why, in a line."""


@dataclass(frozen=True, slots=True)
class McpTool:
    """One tool of an MCP server, offered to the model as `name` (the server's own name, made
    safe for model APIs) and called on the server as `remote`."""

    name: str
    description: str
    parameters: dict[str, Any] = field(hash=False, repr=False)
    remote: str
    connection: _Connection = field(compare=False, repr=False)
    timeout: float = DEFAULT_TIMEOUT_S

    @property
    def spec(self) -> ToolSpec:
        """The tool as offered to the model: the server's description and input schema."""
        return ToolSpec(self.name, self.description, self.parameters)

    def needs_approval(self, arguments: str) -> bool:
        """MCP tools never wait for a moderator (yet)."""
        return False

    async def invoke(self, arguments: str, *, key: str | None = None) -> ToolOutput:
        """Call the tool on its server; every failure is an error output."""
        given = read_arguments(arguments)
        if isinstance(given, ToolOutput):
            return given
        try:
            return await self.connection.call(self.name, self.remote, given, self.timeout)
        except Exception as exc:  # a bug of ours or the SDK's still ends the call, not the turn
            log.warning("mcp tool %s raised %s", self.name, type(exc).__name__)
            return ToolOutput(f"Error: {self.name} failed: {_why(exc)}", is_error=True)


class _Connection:
    """One server's client session, held open by a task of its own: the SDK's task groups must
    be left in the task that entered them, and turns call tools from many tasks."""

    def __init__(self, server: McpServer, environ: Mapping[str, str], timeout: float) -> None:
        self.server = server
        self._environ = environ
        self._timeout = timeout
        self._client: Client | None = None
        self._lost: Client | None = None  # the session a call found closed
        self._tools: list[ServerTool] = []
        self._failure: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        self._retry_at = 0.0
        self._shut = False  # for good: no call may start it again

    async def open(self) -> list[ServerTool]:
        """Start (or reach) the server and list its tools; raise `McpError` saying why not."""
        if self._shut:
            raise McpError("the bot is stopping")
        self._ready, self._stop, self._failure = asyncio.Event(), asyncio.Event(), None
        self._task = asyncio.create_task(self._hold(), name=f"mcp {self.server.label}")
        try:
            async with asyncio.timeout(self._timeout):
                await self._ready.wait()
            if self._client is None:
                raise McpError(_why(self._failure))
        except TimeoutError:
            await self.close()
            raise McpError(f"no answer within {self._timeout:g}s") from None
        except BaseException:
            await self.close()
            raise
        return self._tools

    async def shut(self) -> None:
        """Close for good: a call under way cannot start the server again."""
        self._shut = True
        await self.close()

    async def close(self) -> None:
        """End the session and stop a stdio server's process; never raises."""
        task, self._task = self._task, None
        if task is None:
            return
        if self._client is not None:
            self._stop.set()  # leave the session in order: the SDK stops the process
        else:
            task.cancel()  # still starting
        await asyncio.wait({task})

    async def call(
        self, name: str, remote: str, arguments: dict[str, Any], limit: float
    ) -> ToolOutput:
        """Call `remote` on the server; every failure is an error output for the tool `name`."""
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

        try:
            client = await self._usable()
        except McpError as exc:
            return ToolOutput(
                f"Error: {name} is unavailable: its server cannot be reached ({exc}). "
                "Go on without it, or try again later.",
                is_error=True,
            )
        late = f"Error: {name} did not finish within {limit:g} seconds."
        try:
            async with asyncio.timeout(limit + _GRACE_S):
                result = await client.call_tool(remote, arguments, read_timeout_seconds=limit)
        except TimeoutError:
            log.warning(
                "mcp %s: tool %s did not finish within %gs", self.server.label, remote, limit
            )
            return ToolOutput(late, is_error=True)
        except MCPError as exc:
            if exc.code == REQUEST_TIMEOUT:
                log.warning("mcp %s: tool %s timed out (%gs)", self.server.label, remote, limit)
                return ToolOutput(late, is_error=True)
            if exc.code == CONNECTION_CLOSED or exc.message == "Session terminated":
                return self._gone(client, name, exc)
            return ToolOutput(f"Error: {name} failed: {_why(exc)}", is_error=True)
        except ValidationError as exc:  # an answer out of the protocol: the session may go on
            log.warning("mcp %s: tool %s answered out of protocol", self.server.label, remote)
            return ToolOutput(
                f"Error: {name} failed: its server's answer is invalid ({exc.title}).", True
            )
        except Exception as exc:  # the transport failed
            return self._gone(client, name, exc)
        return _output(name, result)

    def _gone(self, client: Client, name: str, exc: BaseException) -> ToolOutput:
        """The session is closed: say so, and open a new one on the next call."""
        self._lost = client
        log.warning("mcp %s: connection lost (%s)", self.server.label, _why(exc))
        return ToolOutput(
            f"Error: {name} failed: its server stopped answering ({_why(exc)}). "
            "It is connected again on the next call.",
            is_error=True,
        )

    async def _usable(self) -> Client:
        """The open session, or a new one when it was lost (once; then every `RETRY_S`)."""
        async with self._lock:
            client = self._client
            if client is not None and client is not self._lost:
                return client
            loop = asyncio.get_running_loop()
            if loop.time() < self._retry_at:
                raise McpError(f"it failed to start less than {RETRY_S:g}s ago")
            log.info("mcp %s: connecting again", self.server.label)
            await self.close()
            try:
                await self.open()
            except McpError as exc:
                self._retry_at = loop.time() + RETRY_S
                log.warning("mcp %s: cannot connect again (%s)", self.server.label, exc)
                raise
            assert self._client is not None
            return self._client

    async def _hold(self) -> None:
        """Open the session, list the tools, and keep it open until `close`."""
        from mcp import Client
        from mcp.client.stdio import stdio_client

        try:
            if self.server.url is not None:
                async with Client(self.server.url) as client:
                    await self._serve(client)
            else:
                async with (
                    _logged(self.server.label) as errlog,
                    Client(stdio_client(self._params(), errlog=errlog)) as client,
                ):
                    await self._serve(client)
        except Exception as exc:  # it never started, or it stopped: the opener or the log says
            self._failure = exc
            if self._ready.is_set():
                log.info("mcp %s: session ended (%s)", self.server.label, _why(exc))
        finally:
            self._client = None
            self._ready.set()

    async def _serve(self, client: Client) -> None:
        self._tools = await _listed(client)
        self._client = client
        self._ready.set()
        await self._stop.wait()

    def _params(self) -> StdioServerParameters:
        from mcp.client.stdio import StdioServerParameters

        assert self.server.command is not None
        return StdioServerParameters(
            command=self.server.command,
            args=list(self.server.args),
            env={**self._environ, **self.server.env},  # the bot's environment, plus `env`
        )


async def _listed(client: Client) -> list[ServerTool]:
    tools: list[ServerTool] = []
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools += page.tools
        cursor = page.next_cursor
        if cursor is None:
            break
    return tools


@asynccontextmanager
async def _logged(label: str) -> AsyncIterator[TextIO]:
    """A pipe for a server's stderr; each line it writes is logged at INFO under its label."""
    read_end, write_end = os.pipe()
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_end, "rb", 0)
    )
    task = asyncio.create_task(_forward(reader, label))
    errlog = os.fdopen(write_end, "w")
    try:
        yield errlog
    finally:
        errlog.close()  # the server's copy closed when it exited: the reader meets the end
        await asyncio.wait({task}, timeout=1.0)
        task.cancel()
        transport.close()


async def _forward(reader: asyncio.StreamReader, label: str) -> None:
    while True:
        try:
            line = await reader.readline()
        except ValueError:  # a line longer than the reader's limit: dropped
            continue
        if not line:
            return
        if text := line.decode(errors="replace").rstrip():
            log.info("mcp %s: %s", label, text[:500])


@asynccontextmanager
async def connected(
    workflow: Workflow,
    *,
    start_timeout: float = START_TIMEOUT_S,
    call_timeout: float = DEFAULT_TIMEOUT_S,
    environ: Mapping[str, str] | None = None,
) -> AsyncIterator[Workflow]:
    """`workflow` with the tools of the MCP servers its agents declare, while they run.

    Servers start side by side; one that fails within `start_timeout` is logged and left out.
    `environ` (default: this process's) is what a stdio server inherits, under its `env`.
    """
    declared = _declared(workflow)
    if not declared:
        yield workflow
        return
    environment = _environment(environ)
    connections = {
        key: _Connection(server, environment, start_timeout) for key, server in declared.items()
    }
    try:
        listed = await asyncio.gather(*(_started(c) for c in connections.values()))
        tools = {
            key: _tools(connection, found, call_timeout)
            for (key, connection), found in zip(connections.items(), listed, strict=True)
        }
        yield _with_tools(workflow, tools)
    finally:
        await asyncio.gather(*(connection.shut() for connection in connections.values()))


async def _started(connection: _Connection) -> list[ServerTool]:
    try:
        found = await connection.open()
    except McpError as exc:
        log.warning(
            "mcp %s: cannot start (%s); its agents go on without its tools",
            connection.server.label,
            exc,
        )
        return []
    log.info("mcp %s: %d tools", connection.server.label, len(found))
    return found


def _tools(connection: _Connection, listed: Sequence[ServerTool], timeout: float) -> list[McpTool]:
    """The server's tools as `McpTool`s: names made safe, descriptions bounded."""
    label = connection.server.label
    made: list[McpTool] = []
    for tool in listed:
        name = _UNSAFE.sub("_", tool.name)[:64]
        if not _NAME.fullmatch(name):
            log.warning("mcp %s: a tool without a name is skipped", label)
            continue
        if name != tool.name:
            log.warning(
                "mcp %s: tool %r is offered as %r (a name may hold only letters, digits, _ "
                "and -, at most 64)",
                label,
                tool.name,
                name,
            )
        description = clean(tool.description or tool.title or tool.name, MAX_DESCRIPTION)[0]
        parameters = {"type": "object", "properties": {}, **tool.input_schema}
        made.append(McpTool(name, description, parameters, tool.name, connection, timeout))
    return made


def _with_tools(workflow: Workflow, tools: Mapping[tuple[Any, ...], list[McpTool]]) -> Workflow:
    """The workflow with each agent's MCP tools added to its own; a name that an agent already
    has (a tool, a handoff, another server's tool) is skipped with a warning."""
    agents: dict[str, Agent] = {}
    for name, agent in workflow.agents.items():
        taken = {tool.name for tool in agent.function_tools}
        taken |= {tool.name for tool in workflow.handoffs(name)}
        added: list[McpTool] = []
        for key in dict.fromkeys(_key(server) for server in agent.mcp):
            for tool in tools[key]:
                if tool.name in taken:
                    log.warning(
                        "mcp %s: agent %s already has a tool named %r; the server's is skipped",
                        tool.connection.server.label,
                        name,
                        tool.name,
                    )
                    continue
                taken.add(tool.name)
                added.append(tool)
        agents[name] = dataclasses.replace(agent, tools=(*agent.tools, *added)) if added else agent
    return dataclasses.replace(workflow, agents=MappingProxyType(agents))


async def probe(
    server: McpServer,
    timeout: float = START_TIMEOUT_S,  # noqa: ASYNC109 -- it bounds the start, not the stop
    *,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """Start (or reach) `server`, list its tools' names, and stop it; raise `McpError`."""
    connection = _Connection(server, _environment(environ), timeout)
    try:
        tools = await connection.open()
    finally:
        await connection.shut()
    return [tool.name for tool in tools]


async def describe(
    workflow: Workflow,
    *,
    timeout: float = START_TIMEOUT_S,  # noqa: ASYNC109 -- each server's start, as for `probe`
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """One line per server the workflow declares, as `doctor` writes them:
    "ok    mcp LABEL: N tools (a, b)" or "FAIL  mcp LABEL: why"."""

    async def line(server: McpServer) -> str:
        try:
            names = await probe(server, timeout, environ=environ)
        except McpError as exc:
            return f"FAIL  mcp {server.label}: {exc}"
        return f"ok    mcp {server.label}: {tool_count(names)}"

    return list(await asyncio.gather(*(line(server) for server in servers(workflow))))


def servers(workflow: Workflow) -> tuple[McpServer, ...]:
    """Every distinct server the workflow's agents declare, in the order they come."""
    return tuple(_declared(workflow).values())


def tool_count(names: Sequence[str], shown: int = 10) -> str:
    """How many tools, and the first names: "3 tools (a, b, c)"."""
    listed = ", ".join(names[:shown]) + (
        f", and {len(names) - shown} more" if len(names) > shown else ""
    )
    return f"{len(names)} tool{'' if len(names) == 1 else 's'}" + (f" ({listed})" if names else "")


def _declared(workflow: Workflow) -> dict[tuple[Any, ...], McpServer]:
    return {_key(server): server for agent in workflow.agents.values() for server in agent.mcp}


def _key(server: McpServer) -> tuple[Any, ...]:
    """What makes two declarations one server: `McpServer` equality leaves `env` out."""
    return (server.command, server.args, tuple(sorted(server.env.items())), server.url)


def _environment(environ: Mapping[str, str] | None) -> dict[str, str]:
    """What a stdio server inherits (not configuration: what any subprocess would), without
    the bot's own credentials: a server gets those only through its `env:`."""
    given = os.environ if environ is None else environ
    return {name: value for name, value in given.items() if not _CREDENTIAL.match(name)}


_CREDENTIAL = re.compile(
    r"^(OPENAI_API_KEY|SLACK_BOT_TOKEN|SLACK_APP_TOKEN|SLACK_SIGNING_SECRET|DISCORD_TOKEN|"
    r"BOT_DATABASE)$"
)


def _output(name: str, result: CallToolResult) -> ToolOutput:
    """The result as text: text blocks joined, other blocks described, bounded."""
    parts = [_block(block) for block in result.content]
    if not parts and result.structured_content is not None:
        parts = [json.dumps(result.structured_content, default=str)]
    text = bounded("\n".join(parts), MAX_RESULT, "result") or "(no output)"
    if result.is_error:  # the SDK's servers start their texts with "Error executing tool"
        said = text if text.startswith("Error") else f"Error: {name} failed: {text}"
        return ToolOutput(said, is_error=True)
    return ToolOutput(text)


def _block(block: ContentBlock) -> str:
    from mcp_types import AudioContent, EmbeddedResource, ImageContent, TextContent

    if isinstance(block, TextContent):
        return block.text
    if isinstance(block, ImageContent | AudioContent):
        return f"[{block.type}, {block.mime_type}, {len(block.data) * 3 // 4:,} bytes: not shown]"
    if isinstance(block, EmbeddedResource):
        text = getattr(block.resource, "text", None)
        return text if isinstance(text, str) else f"[resource {block.resource.uri}: not shown]"
    return f"[link to resource {block.uri}]"


def _why(exc: BaseException | None) -> str:
    """A failure in one line: the innermost error of a group, with its kind."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if exc is None:
        return "it stopped"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__
