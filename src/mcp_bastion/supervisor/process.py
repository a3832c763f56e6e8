"""One child process: spawned without a shell in its own process group, NDJSON on stdout, stderr to a log.

Must not know about HTTP or JSON-RPC ids: it hands each parsed stdout message (or a large result as its bytes,
`jsonrpc.RawResponse`) to a callback.
"""

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import orjson

from mcp_bastion.config import ServerSpec
from mcp_bastion.errors import ChildUnavailable
from mcp_bastion.files import open_append
from mcp_bastion.jsonrpc import ID_SCAN_BYTES, Message, RawResponse, line_id

log = logging.getLogger("mcp_bastion.child")

READ_CHUNK_BYTES = 256 * 1024  # one read usually holds many small answers under load
WRITE_HIGH_WATER_BYTES = 1024 * 1024  # wait for the pipe to drain past this, so a stuck child can't grow us
STDERR_LOG_MAX_BYTES = 10 * 1024 * 1024  # per-server stderr log rotates past this (one .1 kept)
STDERR_LINE_MAX_BYTES = 64 * 1024  # a longer stderr line is cut; it is a log, not data
EXIT_DRAIN_S = 0.5  # how long a dead child's last stdout may take to arrive; pending calls fail after it
SECRET_MIN_LEN = 6  # shorter env values ("1", "true") are not worth masking and would mangle logs
# A result line this long is handed on as its bytes (Issue 11 item 1: parsing and serialising it again cost ~5x its
# size in memory); below it orjson's round trip costs less than reading the line's ends in Python.
RAW_LINE_MIN_BYTES = 256 * 1024

MessageCallback = Callable[[Message | RawResponse], None]
OversizeCallback = Callable[[Any, int], None]  # (request id, the cap it passed)


class Child(Protocol):
    """What the supervisor and the relay use of a child: the seam tests fill with `mcp_bastion.testing.FakeChild`."""

    exited: asyncio.Event
    returncode: int | None

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs."""

    @property
    def running(self) -> bool:
        """Started and not (known to be) dead."""

    async def start(self) -> None:
        """Spawn it; raise OSError if it cannot be executed."""

    async def send(self, line: bytes) -> None:
        """Write one NDJSON line; raise ChildUnavailable if it is gone."""

    async def stop(self, *, hung: bool = False) -> None:
        """End it and reap it (at once with TERM then KILL when `hung`)."""


class ChildProcess:
    """A running stdio MCP server."""

    def __init__(
        self,
        spec: ServerSpec,
        *,
        base_env: Mapping[str, str],
        line_max_bytes: int,
        stderr_log: Path,
        on_message: MessageCallback,
        on_oversize: OversizeCallback,
        grace_s: float,
    ) -> None:
        self.spec = spec
        self.env = {**base_env, **spec.env}
        self._line_max = line_max_bytes
        self._stderr_log = stderr_log
        self._on_message = on_message
        self._on_oversize = on_oversize
        self._grace_s = grace_s
        self._secrets = sorted((v.encode() for v in spec.env.values() if len(v) >= SECRET_MIN_LEN), key=len)[::-1]
        self._proc: asyncio.subprocess.Process | None = None
        self._outgoing: list[bytes] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.exited = asyncio.Event()
        self.returncode: int | None = None

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs."""
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        """Started, its input open and not dead (death may be known before its last answers are drained)."""
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdin.is_closing():
            return False
        return self.returncode is None and not self.exited.is_set()

    async def start(self) -> None:
        """Spawn the child; raise OSError if it cannot be executed.

        No preexec_fn (Issue 9 item 4): with none, Python spawns with vfork, which costs the event loop well under
        a millisecond instead of a full fork of the gateway (~14 ms each). start_new_session puts the child in its
        own process group (stop() signals the group) and is done by the spawner itself, not by Python code.
        """
        self._proc = await asyncio.create_subprocess_exec(
            self.spec.command,
            *self.spec.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
            cwd=self.spec.cwd,
            start_new_session=True,
        )
        self._stdout_task = asyncio.create_task(self._pump_stdout(), name=f"stdout:{self.spec.name}")
        self._tasks = [
            self._stdout_task,
            asyncio.create_task(self._pump_stderr(), name=f"stderr:{self.spec.name}"),
            asyncio.create_task(self._watch(), name=f"watch:{self.spec.name}"),
        ]

    async def send(self, line: bytes) -> None:
        """Write one NDJSON line (newline added) to the child's stdin.

        Raises:
            ChildUnavailable: the child is gone or its stdin is closed.
        """
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdin.is_closing() or not self.running:
            raise ChildUnavailable(f"server {self.spec.name!r} is not running")
        # Lines sent in one event-loop turn leave in one write: one syscall and one wake-up of the child for
        # all of them (under load several clients' calls arrive per turn).
        self._outgoing.append(line)
        if len(self._outgoing) == 1:
            asyncio.get_running_loop().call_soon(self._flush)
        if proc.stdin.transport.get_write_buffer_size() > WRITE_HIGH_WATER_BYTES:
            try:
                await proc.stdin.drain()
            except (ConnectionError, BrokenPipeError) as exc:
                raise ChildUnavailable(f"server {self.spec.name!r} closed its input") from exc

    def _flush(self) -> None:
        lines, self._outgoing = self._outgoing, []
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdin.is_closing():
            return  # the exit path fails whatever was pending
        proc.stdin.write(b"\n".join(lines) + b"\n")

    async def _pump_stdout(self) -> None:
        """Split stdout into lines without copying a long line more than once (Issue 11 item 1).

        A line's pieces are kept in a list and joined once at its newline (not re-concatenated per read, which
        copied a 17 MB answer ~70 times and held two copies at the end), or never when it is a large result (handed
        on as `RawResponse`, the pieces themselves); a line over the cap is dropped as it
        streams in, keeping only its first and last `ID_SCAN_BYTES` to find the call it answered.
        """
        assert self._proc is not None
        assert self._proc.stdout is not None
        stdout = self._proc.stdout
        pieces: list[bytes] = []
        size = 0
        dropped: _DroppedLine | None = None
        try:
            while chunk := await stdout.read(READ_CHUNK_BYTES):
                start = 0
                while (end := chunk.find(b"\n", start)) != -1:
                    if dropped is not None:
                        dropped.ends(chunk[start:end])
                        dropped = None
                    elif pieces or end - start >= RAW_LINE_MIN_BYTES:
                        pieces.append(chunk[start:end])
                        self._line(pieces, size + end - start)
                        pieces, size = [], 0
                    else:
                        self._route(self._parse(chunk[start:end]))
                    start = end + 1
                rest = chunk[start:] if start else chunk
                if not rest:
                    continue
                if dropped is not None:
                    dropped.grows(rest)
                    continue
                pieces.append(rest)
                size += len(rest)
                if size > self._line_max:
                    dropped = _DroppedLine(pieces, size, self._dropped)
                    pieces, size = [], 0
        except Exception:  # a pump must never die silently; _watch still reaps
            log.exception("server %s: stdout reader failed", self.spec.name)

    def _line(self, pieces: list[bytes], size: int) -> None:
        """A line read in pieces: a large result is handed on as its bytes, anything else parsed (joined once)."""
        if size >= RAW_LINE_MIN_BYTES and (raw := RawResponse.of(pieces)) is not None:
            pieces.clear()
            self._route(raw)
            return
        line = b"".join(pieces)
        pieces.clear()
        message = self._parse(line)
        del line  # the parsed message alone stays alive while it is routed (peak RSS)
        self._route(message)

    def _parse(self, line: bytes) -> dict[str, Any] | None:
        if not line.strip():
            return None
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError:
            log.warning("server %s: skipped a stdout line that is not JSON (%d bytes)", self.spec.name, len(line))
            return None
        if not isinstance(message, dict):
            log.warning("server %s: skipped a stdout line that is not a JSON-RPC object", self.spec.name)
            return None
        return message

    def _route(self, message: Message | RawResponse | None) -> None:
        if message is None:
            return
        try:
            self._on_message(message)
        except Exception:
            log.exception("server %s: failed to route a message", self.spec.name)

    def _dropped(self, request_id: Any, size: int | None) -> None:
        """A line over the cap: fail the call it answers (`size` is None while the line is still arriving)."""
        if size is not None:
            log.warning(
                "server %s: dropped a stdout line of %d bytes (over CHILD_LINE_MAX_BYTES, %d)",
                self.spec.name,
                size,
                self._line_max,
            )
        if request_id is not None:
            try:
                self._on_oversize(request_id, self._line_max)
            except Exception:
                log.exception("server %s: failed to fail an oversized answer", self.spec.name)

    async def _pump_stderr(self) -> None:
        assert self._proc is not None
        assert self._proc.stderr is not None
        stderr = self._proc.stderr
        pending = b""
        with contextlib.suppress(Exception):
            while chunk := await stderr.read(READ_CHUNK_BYTES):
                pending += chunk
                cut = pending.rfind(b"\n") + 1
                if cut:
                    self._write_stderr(pending[:cut])
                    pending = pending[cut:]
                elif len(pending) > STDERR_LINE_MAX_BYTES:
                    self._write_stderr(pending[:STDERR_LINE_MAX_BYTES] + b" [cut]\n")
                    pending = b""
            if pending:
                self._write_stderr(pending + b"\n")

    def _write_stderr(self, data: bytes) -> None:
        for secret in self._secrets:
            data = data.replace(secret, b"****")
        try:
            fd = self._open_stderr_log()
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("server %s: cannot write its stderr log: %s", self.spec.name, exc)

    def _open_stderr_log(self) -> int:
        """The stderr log (0600, never through a symlink), rotated to `.1` first when it is full."""
        path = self._stderr_log
        fd = open_append(path)
        try:
            full = os.fstat(fd).st_size > STDERR_LOG_MAX_BYTES
        except OSError:
            os.close(fd)
            raise
        if not full:
            return fd
        os.close(fd)
        path.replace(path.with_suffix(path.suffix + ".1"))
        return open_append(path)

    async def _watch(self) -> None:
        proc = self._proc
        assert proc is not None
        self.returncode = await proc.wait()
        self._kill_group(signal.SIGKILL)  # grandchildren of a dead child must not outlive it
        # Answers the child wrote just before exiting are still in the pipe: deliver them first.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._stdout_task), EXIT_DRAIN_S)
        self.exited.set()

    def _kill_group(self, sig: signal.Signals) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    async def stop(self, *, hung: bool = False) -> None:
        """Close stdin, TERM the group after a grace period, KILL after another; always reap.

        A `hung` child is TERMed at once and KILLed after one grace period: a stopped (SIGSTOP) process does not act
        on TERM until it is continued, so only KILL ends it.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()
        if hung:
            self._kill_group(signal.SIGTERM)
        for sig in (signal.SIGKILL,) if hung else (signal.SIGTERM, signal.SIGKILL):
            if await self._wait_exit(self._grace_s):
                break
            self._kill_group(sig)
        await self.exited.wait()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _wait_exit(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.exited.wait(), seconds)
        except TimeoutError:
            return False
        return True


class _DroppedLine:
    """A stdout line over the cap, dropped as it arrives: only its ends are kept, to find the call it answers.

    The Python SDK writes "id" first, the TypeScript SDK last (Issue 11 item 1): an id in the head fails the call at
    once, one in the tail when the line ends. Either way the call fails with "too large", never by its timeout.
    """

    __slots__ = ("head", "report", "reported", "size", "tail")

    def __init__(self, pieces: list[bytes], size: int, report: Callable[[Any, int | None], None]) -> None:
        first = pieces[0]
        self.head = first[:ID_SCAN_BYTES] if len(first) >= ID_SCAN_BYTES else b"".join(pieces)[:ID_SCAN_BYTES]
        self.tail = b""
        self.size = size
        self.report = report
        self._keep_tail(pieces[-2:])
        request_id = line_id(self.head, b"")
        self.reported = request_id is not None
        if self.reported:
            report(request_id, None)

    def grows(self, data: bytes) -> None:
        """More of the line (no newline in it)."""
        self.size += len(data)
        self._keep_tail([data])

    def ends(self, data: bytes) -> None:
        """The last part of the line, up to its newline."""
        self.grows(data)
        request_id = None if self.reported else line_id(self.head, self.tail.rstrip())
        self.report(request_id, self.size)

    def _keep_tail(self, parts: list[bytes]) -> None:
        joined = b"".join([self.tail, *parts]) if len(parts[-1]) < ID_SCAN_BYTES else parts[-1]
        self.tail = joined[-ID_SCAN_BYTES:]
