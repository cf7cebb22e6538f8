"""A real HTTP server on 127.0.0.1 for the tests of downloads: it serves the bytes it is
given, can cut a body short or ignore ``Range``, and records what it was asked."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Server:
    """What the handler serves and how it misbehaves; what it was asked."""

    files: dict[str, bytes] = field(default_factory=dict)
    cut_after: int | None = None  # send this many body bytes, then close the connection
    ignore_range: bool = False  # answer 200 with the whole file to a Range request
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)
    base: str = ""


def make_handler(state: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            wanted = self.headers.get("Range")
            state.requests.append((self.path, wanted))
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            start = 0
            found = re.fullmatch(r"bytes=(\d+)-", wanted or "")
            if found and not state.ignore_range:
                start = int(found.group(1))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            part = body[start:]
            self.send_header("Content-Length", str(len(part)))
            self.end_headers()
            if state.cut_after is not None:
                part = part[:state.cut_after]  # then the server closes the socket
            self.wfile.write(part)
            self.wfile.flush()

        def log_message(self, *args: object) -> None:  # quiet test output
            pass

    return Handler


@contextmanager
def serving(state: Server | None = None) -> Iterator[Server]:
    """Serve ``state`` (a new one by default) on a free port until the block ends."""
    state = state or Server()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
