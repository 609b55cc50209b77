"""A real HTTP receiver on 127.0.0.1 for the send tests: records what it is sent.

It runs ``http.server.ThreadingHTTPServer`` in a thread, so requests reach it through
a real socket, exactly as they would reach an archive's ingest endpoint. Its behaviour
can be switched while it runs: answer with any status (503 to say "try later"),
insist on a bearer token, hold requests until released (to catch a sender in the
act), or be down altogether (socket closed) and come back on the same port.

Multipart bodies are parsed with the standard library's ``email`` parser, which was
not written with our encoder in mind: a body it can read is a well-formed body.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the receiver saw it (header names in lower case)."""

    path: str
    headers: dict[str, str]
    status: int
    """What the receiver answered."""
    metadata: dict[str, Any] | None
    files: dict[str, bytes] = field(default_factory=dict)
    """File name -> content, for multipart requests."""
    part_types: dict[str, str] = field(default_factory=dict)
    """Part name -> its Content-Type, for multipart requests."""

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")


def _parse_body(content_type: str, body: bytes) -> tuple[Any, dict[str, bytes], dict[str, str]]:
    if content_type.startswith("application/json"):
        return json.loads(body), {}, {}
    if not content_type.startswith("multipart/form-data"):
        raise ValueError(f"unexpected Content-Type {content_type!r}")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    if not message.is_multipart():
        raise ValueError("multipart body does not parse")
    metadata: Any = None
    files: dict[str, bytes] = {}
    types: dict[str, str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        assert isinstance(name, str)
        assert isinstance(payload, bytes)
        types[name] = part.get_content_type()
        if name == "metadata":
            metadata = json.loads(payload)
        else:
            filename = part.get_filename()
            assert filename is not None, "file part without a file name"
            files[filename] = payload
    return metadata, files, types


class Receiver:
    """The receiver; use as a context manager, or call start() and stop()."""

    def __init__(self, port: int = 0) -> None:
        self._port = port
        self._lock = threading.Lock()
        self._requests: list[ReceivedRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.status = 200
        self.token: str | None = None
        self.arrived = threading.Event()
        """Set when a request has been read (before it is answered)."""
        self.release = threading.Event()
        """Cleared: requests wait (up to 30 s) for it before being answered."""
        self.release.set()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}/ingest"

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._requests)

    def accepted(self) -> list[ReceivedRequest]:
        """Requests answered with a 2xx."""
        return [r for r in self.requests if 200 <= r.status < 300]

    def start(self) -> None:
        """Listen (again) on the same port: the first start picks a free one."""
        server = ThreadingHTTPServer(("127.0.0.1", self._port), self._handler_class())
        server.daemon_threads = True
        server.block_on_close = False
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Close the listening socket: connections are refused until start()."""
        if self._server is not None:
            self.release.set()
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _record(self, request: ReceivedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                headers = {key.lower(): value for key, value in self.headers.items()}
                receiver.arrived.set()
                receiver.release.wait(timeout=30)
                status = receiver.status
                if receiver.token is not None and (
                    headers.get("authorization") != f"Bearer {receiver.token}"
                ):
                    status = 401
                try:
                    metadata, files, types = _parse_body(headers.get("content-type", ""), body)
                except (ValueError, AssertionError) as exc:
                    metadata, files, types = None, {}, {}
                    status = 400
                    self.log_error("bad body: %s", exc)
                receiver._record(
                    ReceivedRequest(self.path, headers, status, metadata, files, types)
                )
                answer = json.dumps({"status": status}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep pytest output clean; failures show in the assertions

        return Handler
