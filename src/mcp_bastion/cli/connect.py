"""`mcp-bastion connect URL`: a local stdio MCP server that forwards to a remote gateway (Issue 11 item 8).

For clients that only launch local commands (Claude Desktop's `mcpServers`). Newline-delimited JSON-RPC on
stdin/stdout; Streamable HTTP to the gateway: the session era (Mcp-Session-Id, POST answers as JSON or SSE, a GET
stream for the server's own messages) and the stateless 2026-07-28 era (routing headers mirrored from the body,
cancellation by closing the POST). Messages pass unchanged, including ones no SDK models; the shim reads only
ids, methods and the session header.

When the gateway forgets the session (404, e.g. after a restart) the shim starts a new one with the client's own
`initialize`, `notifications/initialized`, resource subscriptions and log level, then sends the request once
more: the client never notices. While the gateway is unreachable each request is tried again with backoff for
`--retry-for` seconds, then answered with a JSON-RPC error. Every event is one stderr line, never a traceback.

HTTP goes through `httpx2`, which `mcp` (a runtime dependency) requires, as in `doctor`.
"""

import contextlib
import itertools
import os
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any, Final

import anyio
import anyio.to_thread
import httpx2
import orjson
import typer
from anyio.abc import TaskGroup

from mcp_bastion.cli.base import cli, fail
from mcp_bastion.cli.connect_wire import (
    DEFAULT_TOKEN_ENV,
    SESSION_ID_HEADER,
    VERSION_HEADER,
    SseParser,
    backoff_delays,
    check_url,
    error_reply,
    is_notification,
    is_request,
    modern_version,
    routing_headers,
    status_error,
    token_from_env,
    token_from_file,
)
from mcp_bastion.errors import PARSE_ERROR, ConfigError

RETRY_FOR_S: Final = 30.0  # how long one request waits for an unreachable gateway before it is answered with an error
CONNECT_TIMEOUT_S: Final = 10.0  # a gateway that takes longer to accept a connection counts as unreachable
# A call may run as long as the gateway allows it (timeoutSeconds per server) and streams send keepalives: only a
# dead connection stays silent this long.
READ_IDLE_MAX_S: Final = 3600.0
STDIN_LINE_MAX_BYTES: Final = 64 * 1024 * 1024  # one message; larger lines are refused, not buffered
ERROR_BODY_MAX_BYTES: Final = 64 * 1024  # a refusal's body is read only this far
CLOSE_TIMEOUT_S: Final = 2.0  # ending the session when the client leaves; the client may kill us soon after
REPLAYED: Final = ("resources/subscribe", "logging/setLevel")  # session state a new session must be given again
INTERNAL_ID_PREFIX: Final = "mcp-bastion-connect-"

Say = Callable[[str], None]


def say_to_stderr(line: str) -> None:
    """One plain line on stderr (clients such as Claude Desktop keep it in their MCP log)."""
    sys.stderr.write(f"mcp-bastion connect: {line}\n")
    sys.stderr.flush()


def id_key(request_id: Any) -> bytes:
    """A request id as a dict key that keeps 1 and "1" apart."""
    return orjson.dumps(request_id)


class Stdout:
    """Whole lines to the client, one writer at a time, without blocking the event loop."""

    def __init__(self) -> None:
        self.lock = anyio.Lock()

    async def send(self, message: Any) -> None:
        data = orjson.dumps(message) + b"\n"
        async with self.lock:
            await anyio.to_thread.run_sync(self._write, data)

    @staticmethod
    def _write(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


async def stdin_lines() -> AsyncIterator[bytes]:
    """The client's lines until it closes stdin; an oversized line comes back as b"" (refused by the caller)."""
    read = sys.stdin.buffer.readline
    while True:
        line = await anyio.to_thread.run_sync(read, STDIN_LINE_MAX_BYTES + 1, abandon_on_cancel=True)
        if not line:
            return
        if len(line) > STDIN_LINE_MAX_BYTES and not line.endswith(b"\n"):
            while (rest := await anyio.to_thread.run_sync(read, STDIN_LINE_MAX_BYTES, abandon_on_cancel=True)) and (
                not rest.endswith(b"\n")
            ):
                pass
            yield b""
            continue
        if line.strip():
            yield line


class Forwarder:
    """One client's messages to one gateway URL and back."""

    def __init__(self, url: str, http: httpx2.AsyncClient, stdout: Stdout, say: Say, retry_for: float) -> None:
        self.url, self.http, self.stdout, self.say, self.retry_for = url, http, stdout, say, retry_for
        self.session_id: str | None = None
        self.version: str | None = None  # the handshake revision the gateway answered with
        self.initialize: dict[str, Any] | None = None
        self.initialized: dict[str, Any] | None = None
        self.replay: dict[bytes, dict[str, Any]] = {}  # subscriptions and log level, replayed on a new session
        self.reinit_lock = anyio.Lock()
        self.modern_posts: dict[bytes, anyio.CancelScope] = {}
        self.param_maps: dict[str, dict[tuple[str, ...], str]] = {}
        self.listener: anyio.CancelScope | None = None
        self.unreachable = False
        self.ids = itertools.count(1)
        self.tasks: TaskGroup | None = None

    async def run(self, lines: AsyncIterator[bytes]) -> None:
        """Forward until the client closes stdin, then end the session."""
        async with anyio.create_task_group() as tasks:
            self.tasks = tasks
            async for line in lines:
                await self.take(line)
            tasks.cancel_scope.cancel()
        await self.close()

    async def take(self, line: bytes) -> None:
        assert self.tasks is not None
        try:
            message = orjson.loads(line) if line else None
        except orjson.JSONDecodeError:
            message = None
        if not isinstance(message, dict | list):
            self.say("a line from the client is not JSON (or too long); answered with a parse error")
            await self.stdout.send(error_reply(None, "Parse error", PARSE_ERROR))
        elif is_request(message):
            self.tasks.start_soon(self.request, message)
        elif is_notification(message):
            await self.notification(message)  # in order: initialized must follow the initialize answer
        else:
            self.tasks.start_soon(self.post_quietly, message)  # an answer to the server's request, or a batch

    async def request(self, message: dict[str, Any]) -> None:
        version = modern_version(message)
        if version is not None:
            await self.modern_request(message, version)
            return
        if message["method"] == "initialize":
            self.initialize, self.session_id, self.version = message, None, None
            self.stop_listening()
        self.remember(message)
        await self.exchange(message)

    def remember(self, message: dict[str, Any]) -> None:
        """Keep what a new session must be told again: subscribed URIs and the log level."""
        method, params = message["method"], message.get("params") or {}
        if method == "logging/setLevel":
            self.replay[b"level"] = message
        elif method == "resources/subscribe":
            self.replay[id_key(params.get("uri"))] = message
        elif method == "resources/unsubscribe":
            self.replay.pop(id_key(params.get("uri")), None)

    async def modern_request(self, message: dict[str, Any], version: str) -> None:
        """A stateless POST; the client's cancellation closes it, which is how 2026-07-28 cancels."""
        key = id_key(message["id"])
        with anyio.CancelScope() as scope:
            self.modern_posts[key] = scope
            try:
                headers = routing_headers(message, version, self.param_headers(message))
                answer = await self.exchange(message, headers=headers, stateless=True)
            finally:
                self.modern_posts.pop(key, None)
        if scope.cancelled_caught:
            return
        if message["method"] == "tools/list" and isinstance(answer, dict):
            self.learn_param_headers(answer.get("result"))

    def param_headers(self, message: dict[str, Any]) -> dict[str, str]:
        params = message.get("params") or {}
        header_map = self.param_maps.get(str(params.get("name"))) if message["method"] == "tools/call" else None
        if not header_map or not isinstance(params.get("arguments"), dict):
            return {}
        from mcp.shared.inbound import mcp_param_headers

        return mcp_param_headers(header_map, params["arguments"])

    def learn_param_headers(self, result: Any) -> None:
        """Tools whose schema mirrors arguments into `Mcp-Param-*` headers (2026-07-28)."""
        from mcp.shared.inbound import find_invalid_x_mcp_header, x_mcp_header_map

        tools = result.get("tools") if isinstance(result, dict) else None
        for tool in tools if isinstance(tools, list) else []:
            schema = tool.get("inputSchema") if isinstance(tool, dict) else None
            if isinstance(schema, dict) and find_invalid_x_mcp_header(schema) is None:
                if header_map := x_mcp_header_map(schema):
                    self.param_maps[str(tool.get("name"))] = header_map

    async def notification(self, message: dict[str, Any]) -> None:
        assert self.tasks is not None
        method, params = message["method"], message.get("params") or {}
        if method == "notifications/cancelled" and isinstance(params, dict):
            scope = self.modern_posts.get(id_key(params.get("requestId")))
            if scope is not None:
                scope.cancel()
                return
        if method == "notifications/initialized":
            self.initialized = message
            await self.post_quietly(message)
            self.start_listening()
            return
        self.tasks.start_soon(self.post_quietly, message)

    def headers(self, session: str | None, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
        if session is not None:
            headers[SESSION_ID_HEADER] = session
        if self.version is not None:
            headers[VERSION_HEADER] = self.version
        headers.update(extra or {})
        return headers

    async def exchange(
        self,
        message: dict[str, Any],
        *,
        headers: dict[str, str] | None = None,
        stateless: bool = False,
        internal: bool = False,
    ) -> dict[str, Any] | None:
        """POST a request and relay what comes back; a gone session is replaced once; returns the answer."""
        resent = False
        for delay in self.retry_delays():
            if delay is None:
                return await self.give_up(message, internal)
            if not internal and self.reinit_lock.locked():
                async with self.reinit_lock:
                    pass  # a new session is being made: wait for it rather than post into the gap
            session = None if stateless else self.session_id
            try:
                async with self.http.stream(
                    "POST", self.url, content=orjson.dumps(message), headers=self.headers(session, headers)
                ) as response:
                    self.reachable()
                    gone = response.status_code == 404 and session is not None and not resent
                    if not gone:
                        return await self.relay(response, message, internal)
            except httpx2.ConnectError as exc:
                self.lost(exc)
                await anyio.sleep(delay)
                continue
            except (httpx2.TransportError, httpx2.StreamError, ValueError) as exc:
                self.say(f"the connection broke before {message['method']} was answered ({type(exc).__name__})")
                return await self.answer(message, error_reply(message["id"], "the gateway connection broke"), internal)
            resent = True
            await self.reinitialize(session)
        return None  # unreachable: retry_delays ends with None

    def retry_delays(self) -> list[float | None]:
        """0 (try now), then backoff waits until `retry_for` is spent, then None (give up)."""
        spent, waits = 0.0, []
        for delay in backoff_delays():
            if spent + delay > self.retry_for:
                break
            waits.append(delay)
            spent += delay
        last = [self.retry_for - spent] if self.retry_for > spent else []
        return [0.0, *waits, *last, None]

    async def give_up(self, message: dict[str, Any], internal: bool) -> dict[str, Any]:
        self.say(f"gave up on {message['method']} after {self.retry_for:g} s: the gateway is unreachable")
        reply = error_reply(message["id"], f"mcp-bastion connect: the gateway at {self.url} is unreachable")
        return await self.answer(message, reply, internal)

    async def answer(self, message: dict[str, Any], reply: dict[str, Any], internal: bool) -> dict[str, Any]:
        if not internal:
            await self.stdout.send(reply)
        return reply

    async def relay(self, response: httpx2.Response, message: dict[str, Any], internal: bool) -> dict[str, Any] | None:
        """Everything the gateway sends on this POST goes to the client; the request's own answer is returned."""
        request_id, status = message["id"], response.status_code
        if status >= 400:
            body = await read_bounded(response)
            self.say(f"{message['method']}: the gateway answered HTTP {status}{hint_for(status)}")
            return await self.answer(message, status_error(request_id, status, body), internal)
        if message["method"] == "initialize" and (session := response.headers.get(SESSION_ID_HEADER)):
            self.session_id = session
        answer: dict[str, Any] | None = None
        async for incoming in messages_of(response):
            if isinstance(incoming, dict) and "method" not in incoming and incoming.get("id") == request_id:
                answer = incoming
                if not internal:
                    await self.stdout.send(incoming)
            else:
                await self.stdout.send(incoming)
        if answer is None:
            reply = error_reply(request_id, "the gateway ended the answer without a result")
            return await self.answer(message, reply, internal)
        if message["method"] == "initialize":
            self.version = str((answer.get("result") or {}).get("protocolVersion") or "") or None
        return answer

    async def post_quietly(self, message: Any) -> None:
        """A notification or an answer: delivered or reported on stderr, never answered to the client."""
        label = message.get("method", "a response") if isinstance(message, dict) else "a batch"
        for delay in self.retry_delays():
            if delay is None:
                self.say(f"dropped {label}: the gateway is unreachable")
                return
            try:
                response = await self.http.post(
                    self.url, content=orjson.dumps(message), headers=self.headers(self.session_id)
                )
            except httpx2.ConnectError as exc:
                self.lost(exc)
                await anyio.sleep(delay)
                continue
            except httpx2.TransportError as exc:
                self.say(f"{label} may not have reached the gateway ({type(exc).__name__})")
                return
            self.reachable()
            if response.status_code >= 400:
                self.say(f"{label}: the gateway answered HTTP {response.status_code}{hint_for(response.status_code)}")
            return

    async def reinitialize(self, stale: str | None) -> None:
        """Start a new session with the client's own handshake, once for everyone who saw `stale` 404."""
        async with self.reinit_lock:
            if self.session_id != stale or self.initialize is None:
                return
            self.say("the gateway no longer knows this session (HTTP 404, e.g. it restarted): starting a new one")
            self.session_id = None
            self.stop_listening()
            answer = await self.exchange(self.internal(self.initialize), internal=True)
            if answer is None or "error" in answer or self.session_id is None:
                self.say("could not start a new session; the next request tries again")
                return
            if self.initialized is not None:
                await self.post_quietly(self.initialized)
            for request in list(self.replay.values()):
                await self.exchange(self.internal(request), internal=True)
            self.start_listening()
            self.say("new session ready")

    def internal(self, message: dict[str, Any]) -> dict[str, Any]:
        """A copy of a client message under an id of ours, so its answer is never mistaken for the client's."""
        return {**message, "id": f"{INTERNAL_ID_PREFIX}{next(self.ids)}"}

    def start_listening(self) -> None:
        """The GET stream that carries the server's own requests and notifications, for the current session."""
        assert self.tasks is not None
        self.stop_listening()
        if self.session_id is not None:
            self.listener = anyio.CancelScope()
            self.tasks.start_soon(self.listen, self.session_id, self.listener)

    def stop_listening(self) -> None:
        if self.listener is not None:
            self.listener.cancel()
            self.listener = None

    async def listen(self, session: str, scope: anyio.CancelScope) -> None:
        with scope:
            delays, last_id = backoff_delays(), None
            while self.session_id == session:
                extra = {"accept": "text/event-stream"} | ({"last-event-id": last_id} if last_id else {})
                try:
                    async with self.http.stream("GET", self.url, headers=self.headers(session, extra)) as response:
                        self.reachable()
                        if response.status_code == 405:
                            return  # the server offers no stream of its own; nothing is missed
                        if response.status_code == 404:
                            assert self.tasks is not None
                            self.tasks.start_soon(self.reinitialize, session)
                            return
                        if response.status_code < 400:
                            delays = backoff_delays()
                            parser = SseParser()
                            async for line in response.aiter_lines():
                                if (event := parser.feed(line)) is not None and event.data:
                                    await self.stdout.send(orjson.loads(event.data))
                            last_id = parser.last_event_id or last_id
                except httpx2.ConnectError as exc:
                    self.lost(exc)
                except (httpx2.TransportError, httpx2.StreamError, ValueError):
                    pass  # the stream broke: open it again below
                await anyio.sleep(next(delays))

    def lost(self, exc: Exception) -> None:
        if not self.unreachable:
            self.unreachable = True
            self.say(f"the gateway at {self.url} is unreachable ({type(exc).__name__}); retrying with backoff")

    def reachable(self) -> None:
        if self.unreachable:
            self.unreachable = False
            self.say("the gateway is reachable again")

    async def close(self) -> None:
        """The client left: end the session so the gateway can free its child at once."""
        if self.session_id is None:
            return
        # A courtesy the gateway's own reaper backs up, so a transport error here is no news.
        with anyio.move_on_after(CLOSE_TIMEOUT_S, shield=True), contextlib.suppress(httpx2.TransportError):
            await self.http.delete(self.url, headers=self.headers(self.session_id))


async def messages_of(response: httpx2.Response) -> AsyncIterator[Any]:
    """The JSON-RPC messages in a POST's answer, whether a JSON body (one message or a batch) or an SSE stream."""
    content_type = response.headers.get("content-type", "").lower()
    if content_type.startswith("text/event-stream"):
        parser = SseParser()
        async for line in response.aiter_lines():
            if (event := parser.feed(line)) is not None and event.data:
                yield orjson.loads(event.data)
        return
    body = await response.aread()
    if not body.strip():
        return
    parsed = orjson.loads(body)
    for message in parsed if isinstance(parsed, list) else [parsed]:
        yield message


async def read_bounded(response: httpx2.Response) -> Any:
    """A refusal's JSON body (or None), read at most ERROR_BODY_MAX_BYTES."""
    data = b""
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > ERROR_BODY_MAX_BYTES:
            return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def hint_for(status: int) -> str:
    if status in (401, 403):
        return " (check the token: --token-env or --token-file)"
    if status == 429:
        return " (rate limited)"
    return ""


async def forward(url: str, token: str | None, verify: ssl.SSLContext | bool, retry_for: float) -> None:
    """Serve stdio until the client closes it."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    timeout = httpx2.Timeout(READ_IDLE_MAX_S, connect=CONNECT_TIMEOUT_S)
    async with httpx2.AsyncClient(headers=headers, timeout=timeout, verify=verify, follow_redirects=False) as http:
        await Forwarder(url, http, Stdout(), say_to_stderr, retry_for).run(stdin_lines())


def choose_token(token_env: str, token_file: Path | None) -> tuple[str | None, str]:
    """The token and where it came from (for the start-up line; never the value)."""
    if token_file is not None:
        return token_from_file(token_file), f"--token-file {token_file}"
    token = token_from_env(os.environ, token_env)
    return token, f"${token_env}" if token else f"no token (${token_env} is not set)"


@cli.command()
def connect(
    url: Annotated[str, typer.Argument(help="The gateway's MCP endpoint, e.g. https://gateway.example/mcp/NAME.")],
    token_env: Annotated[
        str, typer.Option("--token-env", metavar="NAME", help="Environment variable holding the token.")
    ] = DEFAULT_TOKEN_ENV,
    token_file: Annotated[
        Path | None, typer.Option("--token-file", help="File holding the token (mode 0600); wins over --token-env.")
    ] = None,
    ca_file: Annotated[
        Path | None, typer.Option("--ca-file", help="Trust this CA bundle for https (a self-signed gateway).")
    ] = None,
    retry_for: Annotated[
        float, typer.Option("--retry-for", min=0, help="Seconds a request waits for an unreachable gateway.")
    ] = RETRY_FOR_S,
) -> None:
    """Serve MCP on stdin/stdout and forward it to a remote gateway (for clients that only launch commands).

    The token is never a flag value (argv is visible to every user in `ps`): it comes from an environment
    variable (--token-env, default MCP_BASTION_TOKEN) or a file only you can read (--token-file).

    Example: MCP_BASTION_TOKEN=... mcp-bastion connect https://gateway.example/mcp/files
    """
    try:
        check_url(url)
        token, source = choose_token(token_env, token_file)
    except ConfigError as exc:
        fail(exc.message, "see `mcp-bastion connect --help` for the URL and token rules")
        return
    if ca_file is not None and not ca_file.is_file():
        fail(f"--ca-file {ca_file}: no such file", "pass the PEM file of the CA that signed the gateway's certificate")
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
    say_to_stderr(f"forwarding stdio to {url} ({source})")
    try:
        anyio.run(forward, url, token, verify, retry_for)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except Exception as exc:  # the top of the process: one line, no traceback
        say_to_stderr(f"stopped: {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from None
