"""An RTSP server on loopback for the tests: FFmpeg (PyAV, in a child process) publishes a video
to it and it relays the RTP packets to the clients that play it, as a camera's server would.

Only what FFmpeg's RTSP client and muxer say over TCP (RFC 2326: OPTIONS, ANNOUNCE, DESCRIBE,
SETUP, RECORD, PLAY, TEARDOWN; RTP interleaved on the connection). A client that plays gets every
packet from the first one (so it starts on a key frame), then the rest as they come; when the
publisher is done its connection closes: the stream stops.
"""

import contextlib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

# The publisher, in its own process: PyAV holds the GIL while its RTSP muxer talks to us.
PUBLISH = """
import sys, time, av
video, url, speed = sys.argv[1], sys.argv[2], float(sys.argv[3])
with av.open(video) as source:
    stream = source.streams.video[0]
    out = av.open(url, "w", format="rtsp", options={"rtsp_transport": "tcp"})
    target = out.add_stream_from_template(stream)
    start = time.monotonic()
    for packet in source.demux(stream):
        if packet.dts is None:
            continue
        due = start + float(packet.pts * stream.time_base) / speed
        time.sleep(max(0.0, due - time.monotonic()))
        packet.stream = target
        out.mux(packet)
    out.close()
"""


class _Relay:
    """The server: one thread accepting, one per connection."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sdp: bytes | None = None
        self.packets: list[bytes] = []
        self.done = False
        self.changed = threading.Condition()
        self.connections: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept)]
        self.threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.connections.append(connection)
            thread = threading.Thread(target=self._serve, args=(connection,))
            self.threads.append(thread)
            thread.start()

    def _serve(self, connection: socket.socket) -> None:
        reader = connection.makefile("rb")
        publisher = False
        try:
            while request := _read_request(reader, self._interleaved):
                method, url, headers, body = request
                reply = {"CSeq": headers["cseq"]}
                content = b""
                if method == "OPTIONS":
                    reply["Public"] = "OPTIONS, DESCRIBE, ANNOUNCE, SETUP, PLAY, RECORD, TEARDOWN"
                elif method == "ANNOUNCE":
                    publisher = True
                    with self.changed:
                        self.sdp = body
                        self.changed.notify_all()
                elif method == "DESCRIBE":
                    with self.changed:
                        self.changed.wait_for(lambda: self.sdp is not None, 10)
                    if self.sdp is None:
                        _respond(connection, reply, b"", "404 Not Found")
                        return
                    content = self.sdp
                    reply |= {"Content-Type": "application/sdp", "Content-Base": url + "/"}
                elif method == "SETUP":
                    reply |= {"Transport": headers["transport"], "Session": "1"}
                elif method in ("RECORD", "PLAY", "TEARDOWN"):
                    reply["Session"] = "1"
                _respond(connection, reply, content)
                if method == "PLAY":
                    self._play(connection)
                    return
                if method == "TEARDOWN":
                    return
        except OSError:
            pass  # the other end hung up, or the server is closing
        finally:
            if publisher:
                with self.changed:
                    self.done = True
                    self.changed.notify_all()
            connection.close()

    def _interleaved(self, frame: bytes) -> None:
        """An RTP or RTCP packet from the publisher: kept and passed on as it is."""
        with self.changed:
            self.packets.append(frame)
            self.changed.notify_all()

    def _play(self, connection: socket.socket) -> None:
        sent = 0
        while True:
            with self.changed:
                self.changed.wait_for(lambda n=sent: len(self.packets) > n or self.done, 10)
                new, done = self.packets[sent:], self.done
            for frame in new:
                connection.sendall(frame)
            sent += len(new)
            if done and sent == len(self.packets):
                return

    def close(self) -> None:
        with self.changed:
            self.done = True
            self.changed.notify_all()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self.listener.close()
        for connection in self.connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        for thread in self.threads:
            thread.join(10)


def _read_request(reader, interleaved) -> tuple[str, str, dict, bytes] | None:
    """The next request on a connection (interleaved packets before it go to ``interleaved``);
    None when the connection closes."""
    while reader.peek(1)[:1] == b"$":
        head = reader.read(4)
        interleaved(head + reader.read(int.from_bytes(head[2:4], "big")))
    lines = []
    while (line := reader.readline()) not in (b"\r\n", b"\n"):
        if not line:
            return None
        lines.append(line.decode().strip())
    method, url, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return method, url, headers, reader.read(int(headers.get("content-length", 0)))


def _respond(connection: socket.socket, headers: dict, body: bytes, status="200 OK") -> None:
    if body:
        headers["Content-Length"] = str(len(body))
    lines = "".join(f"{key}: {value}\r\n" for key, value in headers.items())
    connection.sendall(f"RTSP/1.0 {status}\r\n{lines}\r\n".encode() + body)


@contextlib.contextmanager
def rtsp_stream(video: Path, speed: float = 1.0) -> Iterator[str]:
    """An rtsp:// URL on loopback where ``video`` (H.264) is published at ``speed`` times its
    rate, after which the stream stops; the server and publisher stop on leaving."""
    relay = _Relay()
    url = f"rtsp://127.0.0.1:{relay.port}/live"
    publisher = subprocess.Popen(
        [sys.executable, "-c", PUBLISH, str(video), url, str(speed)], stderr=subprocess.PIPE
    )
    try:
        yield url
    finally:
        publisher.kill()
        publisher.communicate()
        relay.close()
