"""A loopback TCP relay that records what a client sends, to check which protocol era it spoke on the wire."""

import re
import socket
import threading
from dataclasses import dataclass
from types import TracebackType


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]


class RecordingProxy:
    """Listens on 127.0.0.1, relays every connection to `upstream_port`, keeps each connection's request bytes."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._sent: list[bytearray] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
            upstream.settimeout(None)
            buffer = bytearray()
            with self._lock:
                self._sent.append(buffer)
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, buffer), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, record: bytearray | None) -> None:
        try:
            while data := source.recv(65536):
                if record is not None:
                    with self._lock:
                        record.extend(data)
                target.sendall(data)
        except OSError:
            pass
        finally:
            try:
                target.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def requests(self) -> list[SeenRequest]:
        """Every HTTP request line and its headers (names lower-cased), in order per connection."""
        with self._lock:
            raw = b"".join(bytes(b) + b"\r\n" for b in self._sent).decode("latin-1")
        found = []
        for match in re.finditer(r"(GET|POST|DELETE|PUT|OPTIONS) (\S+) HTTP/1\.1\r\n(.*?)\r\n\r\n", raw, re.S):
            headers = {}
            for line in match.group(3).split("\r\n"):
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            found.append(SeenRequest(match.group(1), match.group(2), headers))
        return found

    def body_text(self) -> str:
        with self._lock:
            return b"".join(bytes(b) for b in self._sent).decode("utf-8", "replace")

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.close()
                except OSError:
                    pass

    def __enter__(self) -> "RecordingProxy":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
