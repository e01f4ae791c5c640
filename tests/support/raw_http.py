"""A request over a raw socket, for tests of how a server ends a connection: what httpx hides (a reset
against a clean end of stream, the bytes that got through before it) is what they check."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

CHUNK = b"x" * 65536


@dataclass
class Exchange:
    response: bytes = b""
    """Every byte read, the answer's head and body (and whatever followed)."""
    sent: int = 0
    """Body bytes the kernel took from us."""
    send_error: OSError | None = None
    read_error: OSError | None = None
    eof: bool = False
    """The server ended the stream cleanly (FIN) after what it sent."""
    closed: threading.Event = field(default_factory=threading.Event)
    """Set once the read side has ended (a clean end, a reset or the read timeout)."""

    @property
    def status(self) -> int:
        line = self.response.split(b"\r\n", 1)[0]
        parts = line.split(b" ")
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0

    def answer(self) -> tuple[int, bytes]:
        """The first answer's status and its whole body (by its content-length); (0, b"") when the
        answer did not arrive whole."""
        head, found, rest = self.response.partition(b"\r\n\r\n")
        if not found:
            return 0, b""
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            None,
        )
        if length is None or len(rest) < length:
            return 0, b""
        return self.status, rest[:length]


def read_answer(sock: socket.socket, exchange: Exchange, *, until_eof: bool) -> None:
    """Read into `exchange`: one whole answer, or, with until_eof, everything until the server ends
    the stream (or resets it, or the socket's timeout passes)."""
    try:
        while until_eof or exchange.answer()[0] == 0:
            chunk = sock.recv(65536)
            if not chunk:
                exchange.eof = True
                break
            exchange.response += chunk
    except OSError as exc:  # a reset (ConnectionResetError) or the timeout
        exchange.read_error = exc
    finally:
        exchange.closed.set()


def post(
    address: tuple[str, int],
    path: str,
    *,
    declared: int,
    body: int,
    close: bool,
    timeout: float = 30.0,
    extra_head: bytes = b"",
) -> Exchange:
    """POST a body of `body` bytes declared as `declared`, written whole before reading (as httpx and
    requests do), then read the answer until the server ends the stream; `close` asks for
    `connection: close`. The socket is closed at the end."""
    exchange = Exchange()
    with socket.create_connection(address, timeout=timeout) as sock:
        head = b"POST %s HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n" % path.encode()
        head += b"content-length: %d\r\n" % declared + extra_head
        head += b"connection: close\r\n\r\n" if close else b"\r\n"
        try:
            sock.sendall(head)
            while exchange.sent < body:
                piece = CHUNK[: min(len(CHUNK), body - exchange.sent)]
                sock.sendall(piece)
                exchange.sent += len(piece)
        except OSError as exc:  # a reset, or a broken pipe after one
            exchange.send_error = exc
        read_answer(sock, exchange, until_eof=close)
    return exchange


def send_until_closed(
    address: tuple[str, int], head: bytes, *, bound: int, timeout: float = 60.0
) -> Exchange:
    """Send `head` (a request declaring a body it never finishes), then body bytes as fast as the peer
    takes them until it ends the connection, reading the answer beside it. Fails once `bound` bytes
    went out: the peer kept reading past its own bound."""
    exchange = Exchange()
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(head)
        reader = threading.Thread(target=read_answer, args=(sock, exchange), kwargs={"until_eof": True})
        reader.start()
        try:
            while True:  # ends with the peer's reset
                sock.sendall(CHUNK)
                exchange.sent += len(CHUNK)
                assert exchange.sent < bound, "the peer kept reading"
        except OSError as exc:
            exchange.send_error = exc
        reader.join(timeout)
    return exchange
