"""messenger.frames against real sockets, and a real Connection against a raw-bytes exchange.

The frames are hand-built here (RFC 6455) and written by a thread of the test: byte by byte in
lockstep with the reader (every header split across reads), as one 5 MB frame, over TLS, with the
peer gone or reset mid-frame. No fixed sleeps: lockstep waits on what the reader has heard.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websocket import WebSocketConnectionClosedException, WebSocketProtocolException

from messenger.binance import BOOK_TICKER
from messenger.book import Book
from messenger.connection import CLOSED, WEBSOCKET_CLIENT, Connection
from messenger.frames import CLOSE, CONTINUATION, MAX_MESSAGE_BYTES, PING, TEXT, read_frames
from messenger.routes import route_for
from tests.messenger.test_frames import Reads, Seen, frame
from tests.processes import free_port

TICK = b'{"stream":"btcusdt@bookTicker","data":{"u":7,"s":"BTCUSDT","b":"1.5","B":"2","a":"1.6","A":"3"}}'
WAIT_S = 5.0


def long_form(opcode: int, payload: bytes) -> bytes:
    """A frame whose length takes the 8-byte form, whatever its size (so headers of 10 bytes can
    be split without sending 64 KiB byte by byte)."""
    return bytes([0x80 | opcode, 127]) + struct.pack("!Q", len(payload)) + payload


class Lockstep:
    """The reader's ``heard``: counts its reads, so a writer can wait for each piece to be read
    (alone) before it sends the next."""

    def __init__(self, seen: Seen) -> None:
        self.seen = seen
        self.reads = 0
        self._cond = threading.Condition()

    def heard(self, now: float) -> None:
        self.seen.on_heard(now)
        with self._cond:
            self.reads += 1
            self._cond.notify_all()

    def text(self, payload: bytes, now: float) -> None:
        self.seen.text(payload, now)
        with self._cond:
            self._cond.notify_all()

    def wait(self, reads: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.reads >= reads, WAIT_S), (self.reads, reads)

    def wait_texts(self, texts: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.seen.texts) >= texts, WAIT_S)


@contextlib.contextmanager
def in_thread(target: Callable[[], None]) -> Iterator[None]:
    """Runs the writer while the body reads; its failures (if the body's did not) fail the test."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # shown by the test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(WAIT_S)
    assert not thread.is_alive()
    assert not errors, errors


def read_lockstep(pieces: list[bytes], then: Callable[[socket.socket], None] | None = None) -> Seen:
    """Each piece written only once the previous one was read: every piece its own read."""
    reader, writer = socket.socketpair()
    reader.settimeout(WAIT_S)  # a reader waiting for nothing fails the test, not hangs it
    seen = Seen()
    step = Lockstep(seen)

    def write() -> None:
        with writer:
            for i, piece in enumerate(pieces):
                writer.sendall(piece)
                step.wait(i + 1)
            if then is not None:
                then(writer)

    with reader, in_thread(write):
        read_frames(reader.recv, seen.text, seen.control, step.heard)
    return seen


def test_every_header_and_payload_byte_in_a_read_of_its_own() -> None:
    stream = (
        frame(TEXT, b"hello")
        + frame(TEXT, b"b" * 130)
        + long_form(TEXT, b"long form")
        + frame(TEXT, b"frag", fin=False)
        + frame(PING, b"p")
        + long_form(CONTINUATION, b"mented")
        + frame(TEXT, b"")
        + frame(CLOSE, b"\x03\xe8")
    )
    seen = read_lockstep([stream[i : i + 1] for i in range(len(stream))])
    assert seen.texts == [b"hello", b"b" * 130, b"long form", b"fragmented", b""]
    assert seen.controls == [(PING, b"p"), (CLOSE, b"\x03\xe8")]
    assert seen.heard == len(stream)


@pytest.mark.parametrize("split", [1, 2, 3, 9, 10, 11])
def test_a_header_split_after_each_of_its_bytes_with_frames_before_it(split: int) -> None:
    big = long_form(TEXT, b"x" * 300)
    stream = frame(TEXT, b"a") + frame(TEXT, b"b") + big + frame(CLOSE, b"")
    at = 6 + split  # the two small frames, then `split` bytes of the big one's header
    seen = read_lockstep([stream[:at], stream[at:]])
    assert seen.texts == [b"a", b"b", b"x" * 300]


def test_a_5_mb_frame_between_small_ones_as_tcp_delivers_it() -> None:
    big = bytes(range(256)) * (5 * 4096)  # 5 MiB
    stream = frame(TEXT, b"before") + frame(TEXT, big) + frame(TEXT, b"after") + frame(CLOSE, b"")
    reader, writer = socket.socketpair()
    reader.settimeout(WAIT_S)  # a reader waiting for nothing fails the test, not hangs it
    seen = Seen()

    def write() -> None:
        with writer:
            writer.sendall(stream)

    started = time.perf_counter()
    with reader, in_thread(write):
        read_frames(reader.recv, seen.text, seen.control, seen.on_heard)
    took = time.perf_counter() - started
    assert seen.texts == [b"before", big, b"after"]
    assert took < 2.0, took


def test_a_big_frame_in_many_small_reads_is_not_copied_once_a_read() -> None:
    """Joining what was read at every read would copy ~2.5 MB a read: 52,000 reads of 100 bytes,
    ~130 GB (~3 s here, against ~30 ms)."""
    piece = 100
    big = b"z" * (5 * 1024 * 1024)
    stream = frame(TEXT, big) + frame(TEXT, b"next") + frame(CLOSE, b"")
    seen = Seen()
    started = time.perf_counter()
    read_frames(Reads(stream[i : i + piece] for i in range(0, len(stream), piece)), seen.text,
                seen.control, seen.on_heard)  # fmt: skip
    took = time.perf_counter() - started
    assert seen.texts == [big, b"next"]
    assert took < 1.0, took


def test_the_largest_message_allowed_and_one_byte_more() -> None:
    seen = Seen()
    ok = frame(TEXT, b"m" * MAX_MESSAGE_BYTES) + frame(CLOSE, b"")
    read_frames(Reads(ok[i : i + 65536] for i in range(0, len(ok), 65536)), seen.text, seen.control,
                seen.on_heard)  # fmt: skip
    assert [len(t) for t in seen.texts] == [MAX_MESSAGE_BYTES]
    # Refused from its header alone: not one byte of the payload is waited for.
    seen = Seen()
    reads = Reads([frame(TEXT, b"m" * (MAX_MESSAGE_BYTES + 1))[:10]])
    with pytest.raises(WebSocketProtocolException, match="a frame of"):
        read_frames(reads, seen.text, seen.control, seen.on_heard)
    assert reads.calls == 1


def test_a_close_in_the_middle_of_a_fragmented_message_ends_it_unread() -> None:
    late = frame(TEXT, b"after the close")
    stream = frame(TEXT, b"whole") + frame(TEXT, b"half", fin=False) + frame(CLOSE, b"\x03\xe8")

    def after(writer: socket.socket) -> None:
        writer.sendall(late)

    seen = read_lockstep([stream], then=after)
    assert seen.texts == [b"whole"]
    assert seen.controls == [(CLOSE, b"\x03\xe8")]


@pytest.mark.parametrize("cut", [1, 2, 5, 40])
def test_the_peer_gone_mid_frame(cut: int) -> None:
    stream = frame(TEXT, b"one") + frame(TEXT, b"t" * 200)
    seen = Seen()
    with pytest.raises(WebSocketConnectionClosedException):
        read_lockstep_raising(stream[: 5 + cut], seen)
    assert seen.texts == [b"one"]


def read_lockstep_raising(data: bytes, seen: Seen, reset: bool = False) -> None:
    """Writes data over TCP, then closes (with a RST if asked); reads until that ends it."""
    with socket.create_server(("127.0.0.1", free_port())) as server:
        writer = socket.create_connection(server.getsockname())
        reader, _ = server.accept()
        reader.settimeout(WAIT_S)

    def write() -> None:
        with writer:
            writer.sendall(data)
            if reset:
                writer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    with reader, in_thread(write):
        read_frames(reader.recv, seen.text, seen.control, seen.on_heard)


def test_the_peer_reset_mid_frame_raises_an_oserror_the_connection_catches() -> None:
    seen = Seen()
    with pytest.raises((ConnectionResetError, WebSocketConnectionClosedException)):
        read_lockstep_raising(frame(TEXT, b"one") + frame(TEXT, b"t" * 200)[:30], seen, reset=True)
    assert seen.texts == [b"one"]


@pytest.fixture(scope="module")
def tls_contexts(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    where: Path = tmp_path_factory.mktemp("tls")
    key, cert = where / "key.pem", where / "cert.pem"
    try:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"no openssl to make a certificate: {exc}")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cert)
    return server, client


@pytest.fixture(scope="module")
def ca_bundle(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The self-signed certificate (for websocket-client's WEBSOCKET_CLIENT_CA_BUNDLE)."""
    pems = list(tmp_path_factory.getbasetemp().glob("tls*/cert.pem"))
    assert pems
    return pems[0]


@pytest.mark.parametrize("clean_close", [True, False])
def test_over_tls_records_split_headers_and_a_big_frame(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext], clean_close: bool
) -> None:
    server_ctx, client_ctx = tls_contexts
    big = b"q" * 300_000  # many TLS records (16 KiB each)
    stream = frame(TEXT, b"a") + frame(TEXT, big) + long_form(TEXT, b"l") + frame(TEXT, b"z" * 126)
    raw_reader, raw_writer = socket.socketpair()
    seen = Seen()
    step = Lockstep(seen)

    def write() -> None:
        with server_ctx.wrap_socket(raw_writer, server_side=True) as writer:
            writer.sendall(stream[:1])  # a record of one header byte
            step.wait(1)
            writer.sendall(stream[1:5])
            step.wait(2)
            writer.sendall(stream[5:])
            if clean_close:  # a close_notify, without waiting for the reader's
                step.wait_texts(4)
                writer.setblocking(False)
                with contextlib.suppress(ssl.SSLWantReadError):
                    writer.unwrap()

    for sock in (raw_reader, raw_writer):
        sock.settimeout(WAIT_S)
    with (
        client_ctx.wrap_socket(
            raw_reader, server_hostname="localhost", do_handshake_on_connect=False
        ) as reader,
        in_thread(write),
    ):
        reader.do_handshake()
        with pytest.raises(WebSocketConnectionClosedException):
            read_frames(reader.recv, step.text, seen.control, step.heard)
    assert seen.texts == [b"a", big, b"l", b"z" * 126]


# -- a real Connection against an exchange that writes raw bytes -----------------------


class NoSeeder:
    def request(self, conn: Any, routes: Any) -> None:
        pass


def accept_key(request: bytes) -> str:
    for line in request.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            key = value.strip() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455's GUID
            digest = hashlib.sha1(key, usedforsecurity=False).digest()
            return base64.b64encode(digest).decode()
    raise AssertionError(request)


def client_frame(sock: socket.socket) -> tuple[int, bytes]:
    """One (masked) frame from the client: its opcode and unmasked payload."""

    def exactly(n: int) -> bytes:
        got = b""
        while len(got) < n:
            more = sock.recv(n - len(got))
            assert more, "client went away"
            got += more
        return got

    b0, b1 = exactly(2)
    assert b1 & 0x80, "a client's frames are masked"
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", exactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", exactly(8))[0]
    mask = exactly(4)
    return b0 & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(exactly(n)))


Script = Callable[[socket.socket, bytes], None]


@pytest.fixture
def exchange() -> Iterator[Callable[..., tuple[int, Callable[[], list[BaseException]]]]]:
    """A TCP server whose one connection is handed, after the request, to a script; the script
    writes the 101 response (given as bytes) itself, so it can share a segment with frames."""
    servers: list[socket.socket] = []
    threads: list[threading.Thread] = []
    errors: list[BaseException] = []

    def start(
        script: Script, tls: ssl.SSLContext | None = None
    ) -> tuple[int, Callable[[], list[BaseException]]]:
        server = socket.create_server(("127.0.0.1", free_port()))
        servers.append(server)

        def serve() -> None:
            try:
                raw, _ = server.accept()
                raw.settimeout(WAIT_S)
                sock = raw if tls is None else tls.wrap_socket(raw, server_side=True)
                with sock:
                    request = b""
                    while b"\r\n\r\n" not in request:
                        more = sock.recv(4096)
                        assert more
                        request += more
                    response = (
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Accept: {accept_key(request)}\r\n\r\n"
                    ).encode()
                    script(sock, response)
            except BaseException as exc:  # shown by the test
                errors.append(exc)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        threads.append(thread)

        def finished() -> list[BaseException]:
            """The script's failures, once it has ended."""
            thread.join(WAIT_S)
            assert not thread.is_alive()
            return errors

        return server.getsockname()[1], finished

    yield start
    for thread in threads:
        thread.join(WAIT_S)
    for server in servers:
        server.close()


def connection(port: int, scheme: str = "ws") -> Connection:
    route = route_for("BTCUSDT", BOOK_TICKER)
    return Connection(
        f"{scheme}://127.0.0.1:{port}", [route.stream], {route.stream: route}, Book(5.0), NoSeeder(),  # type: ignore[arg-type]
        ping_interval_s=1000, transport=WEBSOCKET_CLIENT,
    )  # fmt: skip


def run(conn: Connection) -> None:
    conn.start()
    conn.join(WAIT_S)
    assert conn.state == CLOSED


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_a_connection_reads_frames_sent_with_the_handshake_split_and_fragmented(
    exchange: Callable[..., tuple[int, Callable[[], list[BaseException]]]],
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    scheme: str,
) -> None:
    tls = None
    if scheme == "wss":
        tls = request.getfixturevalue("tls_contexts")[0]
        monkeypatch.setenv("WEBSOCKET_CLIENT_CA_BUNDLE", str(request.getfixturevalue("ca_bundle")))
    got: list[tuple[int, bytes]] = []

    def script(sock: socket.socket, response: bytes) -> None:
        # The first frame and half the next header in the 101's own segment.
        second = frame(TEXT, TICK)
        sock.sendall(response + frame(TEXT, TICK) + second[:1])
        sock.sendall(second[1:])
        big = b" " * 200_000 + TICK  # JSON with leading whitespace: a 126/127-length frame
        sock.sendall(frame(TEXT, big[:70_000], fin=False) + frame(PING, b"are you there"))
        got.append(client_frame(sock))  # the pong, before the message is whole
        sock.sendall(frame(CONTINUATION, big[70_000:]) + frame(CLOSE, b"\x03\xe9going away"))
        got.append(client_frame(sock))  # the close returned

    port, finished = exchange(script, tls)
    conn = connection(port, scheme)
    run(conn)
    assert not finished()
    assert (conn.frames, conn.kind_frames, conn.malformed) == (3, {"bookTicker": 3}, 0)
    assert got[0] == (0xA, b"are you there")
    assert got[1][0] == CLOSE
    assert (conn.close_code, conn.close_reason) == (1001, "closed by server (1001 going away)")


@pytest.mark.parametrize(
    ("sent", "reason"),
    [
        (frame(TEXT, TICK, mask=b"abcd"), "dropped: a masked frame from the server"),
        (frame(TEXT, TICK, rsv=0x40), "dropped: reserved bits set"),
        (frame(TEXT, TICK)[:20], "dropped: Connection to remote host was lost."),
        (bytes([0x81, 127]) + struct.pack("!Q", 2**63 + 5), "dropped: a frame of"),
        (frame(PING, b"x" * 126), "dropped: a fragmented or long control frame"),
    ],
)
def test_a_connection_ends_on_what_a_server_must_not_send_or_the_peer_gone(
    exchange: Callable[..., tuple[int, Callable[[], list[BaseException]]]], sent: bytes, reason: str
) -> None:
    def script(sock: socket.socket, response: bytes) -> None:
        sock.sendall(response + frame(TEXT, TICK) + sent)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)  # until the client is gone

    port, finished = exchange(script)
    conn = connection(port)
    run(conn)
    assert not finished()
    assert conn.frames == 1
    assert conn.close_reason.startswith(reason), conn.close_reason


def test_a_connection_reset_mid_frame_is_dropped_not_raised(
    exchange: Callable[..., tuple[int, Callable[[], list[BaseException]]]],
) -> None:
    def script(sock: socket.socket, response: bytes) -> None:
        sock.sendall(response + frame(TEXT, TICK) + frame(TEXT, TICK)[:30])
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    port, finished = exchange(script)
    conn = connection(port)
    run(conn)
    assert not finished()
    assert conn.frames == 1
    assert conn.close_reason.startswith("dropped: "), conn.close_reason


def test_a_connection_closed_by_us_ends_though_the_server_never_answers_the_close(
    exchange: Callable[..., tuple[int, Callable[[], list[BaseException]]]],
) -> None:
    """close() sends a close frame, which makes websocket-client consider the socket no longer
    connected, so its abort() (called next, and by the supervisor's liveness check later) shut
    nothing down: the reader stayed in recv until the server answered, and forever if it never did."""
    got: list[tuple[int, bytes]] = []

    def script(sock: socket.socket, response: bytes) -> None:
        sock.sendall(response + frame(TEXT, TICK))
        got.append(client_frame(sock))  # our close; never answered
        assert sock.recv(1) == b""  # until the client is gone

    port, finished = exchange(script)
    conn = connection(port)
    conn.start()
    deadline = time.monotonic() + WAIT_S
    while conn.frames < 1 and time.monotonic() < deadline:  # the first frame read: it is open
        threading.Event().wait(0.002)
    conn.close("no streams left")
    conn.join(WAIT_S)
    assert conn.state == CLOSED
    assert not finished()
    assert got[0][0] == CLOSE
    assert conn.close_reason == "no streams left"
