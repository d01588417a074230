"""A real HTTP server on 127.0.0.1 for tests of outbound fetches (link previews, webhooks).

``with LocalServer() as srv: srv.route("/page", html=b"<title>x</title>")`` then fetch
``srv.url("/page")``. Every request is recorded in ``srv.requests`` (method, path, headers, body), so a
test can prove a refused fetch never reached the server.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class LocalServer:
    host: str = "127.0.0.1"
    requests: list[Seen] = field(default_factory=list)
    routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = field(default_factory=dict)
    ssl_context: object | None = None

    def __enter__(self) -> LocalServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                server.requests.append(
                    Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                route = server.routes.get(path)
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", "9")
                    self.end_headers()
                    self.wfile.write(b"not found")
                    return
                with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
                    route(self)

            do_GET = do_POST = do_HEAD = do_PUT = _handle

        self._httpd = ThreadingHTTPServer((self.host, 0), Handler)
        self._httpd.daemon_threads = True
        if self.ssl_context is not None:
            self._httpd.socket = self.ssl_context.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def url(self, path: str = "/", host: str | None = None, scheme: str = "http") -> str:
        return f"{scheme}://{host or self.host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    # --- route builders ---------------------------------------------------------------------------
    def route(
        self,
        path: str,
        *,
        body: bytes = b"",
        content_type: str = "text/html; charset=utf-8",
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        def send(h: BaseHTTPRequestHandler) -> None:
            h.send_response(status)
            h.send_header("Content-Type", content_type)
            h.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(body)

        self.routes[path] = send

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        self.route(path, status=status, headers={"Location": location}, content_type="text/plain")

    def chunked(self, path: str, *, total: int, content_type: str = "text/html") -> None:
        """A body of ``total`` bytes sent chunked, without Content-Length."""

        def send(h: BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Type", content_type)
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            left = total
            while left > 0:
                n = min(65536, left)
                h.wfile.write(b"%x\r\n" % n + b"a" * n + b"\r\n")
                left -= n
            h.wfile.write(b"0\r\n\r\n")

        self.routes[path] = send

    def drip(
        self, path: str, *, every: float = 0.1, seconds: float = 30.0, headers_too: bool = False
    ) -> None:
        """A slow-drip response: one byte every ``every`` seconds for ``seconds`` (each read makes
        progress, so only a TOTAL budget stops it). ``headers_too`` drips the header block as well."""

        def send(h: BaseHTTPRequestHandler) -> None:
            end = time.monotonic() + seconds
            if headers_too:
                h.wfile.write(b"HTTP/1.1 200 OK\r\n")
                while time.monotonic() < end:
                    h.wfile.write(b"X-Slow: a\r\n")
                    h.wfile.flush()
                    time.sleep(every)
                return
            h.send_response(200)
            h.send_header("Content-Type", "text/html")
            h.send_header("Content-Length", "100000")
            h.end_headers()
            h.wfile.flush()
            while time.monotonic() < end:
                h.wfile.write(b"a")
                h.wfile.flush()
                time.sleep(every)

        self.routes[path] = send
