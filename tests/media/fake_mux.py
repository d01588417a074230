"""A local stand-in for Mux's live-stream API (``/video/v1/live-streams``): a real HTTP server on
127.0.0.1 that keeps live streams in memory, answers in Mux's response shapes (``{"data": …}``), checks
HTTP Basic auth, and records every request. ``fail_next`` makes the next call answer an error."""

from __future__ import annotations

import base64
import json
import secrets
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Call:
    method: str
    path: str
    body: dict | None
    auth: str


class FakeMux:
    def __init__(self, token_id: str = "mux-id", token_secret: str = "mux-secret"):
        self.expected_auth = "Basic " + base64.b64encode(f"{token_id}:{token_secret}".encode()).decode()
        self.streams: dict[str, dict] = {}
        self.calls: list[Call] = []
        self.fail_next: int | None = None
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeMux:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()

    def _answer(self, method: str, path: str, body: dict | None) -> tuple[int, dict | None]:
        parts = path.strip("/").split("/")  # video v1 live-streams [id] [verb]
        if parts[:3] != ["video", "v1", "live-streams"]:
            return 404, {"error": {"type": "not_found", "messages": ["Not found"]}}
        if len(parts) == 3 and method == "POST":
            sid = secrets.token_hex(8)
            stream = {
                "id": sid,
                "stream_key": secrets.token_hex(16),
                "status": "idle",
                "playback_ids": [
                    {"id": "pb" + secrets.token_hex(6), "policy": p}
                    for p in body.get("playback_policies", [])
                ],
                "new_asset_settings": body.get("new_asset_settings"),
                "passthrough": body.get("passthrough"),
                "reconnect_window": body.get("reconnect_window", 60),
                "latency_mode": body.get("latency_mode", "standard"),
                "created_at": "1700000000",
            }
            self.streams[sid] = stream
            return 201, {"data": stream}
        stream = self.streams.get(parts[3]) if len(parts) > 3 else None
        if stream is None:
            return 404, {"error": {"type": "not_found", "messages": ["Live stream not found"]}}
        verb = parts[4] if len(parts) > 4 else ""
        if method == "GET" and not verb:
            return 200, {"data": stream}
        if method == "DELETE" and not verb:
            del self.streams[stream["id"]]
            return 204, None
        if method == "PUT" and verb == "complete":
            stream["status"] = "idle"
            return 200, {"data": {}}
        if method == "PUT" and verb == "disable":
            stream["status"] = "disabled"
            return 200, {"data": {}}
        if method == "POST" and verb == "reset-stream-key":
            stream["stream_key"] = secrets.token_hex(16)
            return 201, {"data": stream}
        return 404, {"error": {"type": "not_found", "messages": ["Unknown action"]}}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                auth = self.headers.get("Authorization", "")
                fake.calls.append(Call(self.command, self.path, body, auth))
                if auth != fake.expected_auth:
                    status, answer = 401, {"error": {"type": "unauthorized", "messages": ["Unauthorized"]}}
                elif fake.fail_next is not None:
                    status, answer = fake.fail_next, {"error": {"type": "error", "messages": ["Simulated"]}}
                    fake.fail_next = None
                else:
                    status, answer = fake._answer(self.command, self.path, body)
                data = json.dumps(answer).encode() if answer is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _serve  # noqa: N815

        return Handler
