"""A local stand-in for Hive's v2 sync API: a real HTTP server on 127.0.0.1 that replays scripted
replies (recorded response shapes) and records every request it receives."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list -> JSON; bytes/str sent as is
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    at: float  # time.monotonic()


def visual_answer(classes: dict[str, float], *, times: int = 1) -> dict[str, Any]:
    """The shape of a v2 sync visual moderation answer."""
    return {
        "id": "4d1e6c2a-0000-11ef-8000-000000000000",
        "code": 200,
        "project_id": 12345,
        "user_id": 67890,
        "created_on": "2026-01-01T00:00:00.000Z",
        "status": [
            {
                "status": {"code": "0", "message": "SUCCESS"},
                "response": {
                    "input": {
                        "model": "hive_visual_moderation",
                        "model_version": 1,
                        "model_type": "CATEGORIZATION",
                        "media_type": "photo",
                    },
                    "output": [
                        {"time": t, "classes": [{"class": c, "score": s} for c, s in classes.items()]}
                        for t in range(times)
                    ],
                },
            }
        ],
        "from_cache": False,
    }


def text_answer(levels: dict[str, int], *, profanity: tuple[str, ...] = ()) -> dict[str, Any]:
    """The shape of a v2 sync text moderation answer (severity levels 0-3, text_filters matches)."""
    return {
        "id": "5e2f7d3b-0000-11ef-8000-000000000000",
        "code": 200,
        "status": [
            {
                "status": {"code": "0", "message": "SUCCESS"},
                "response": {
                    "input": {
                        "model": "hive_text_moderation",
                        "model_version": 1,
                        "model_type": "TEXT_CLASSIFICATION",
                    },
                    "language": "EN",
                    "moderated_classes": list(levels),
                    "text_filters": [
                        {"value": word, "start_index": 0, "end_index": len(word), "type": "profanity"}
                        for word in profanity
                    ],
                    "pii_entities": [],
                    "output": [
                        {
                            "time": 0,
                            "start_char_index": 0,
                            "end_char_index": 40,
                            "classes": [{"class": c, "score": s} for c, s in levels.items()],
                        }
                    ],
                },
            }
        ],
    }


CLEAN_VISUAL = visual_answer(
    {"general_nsfw": 0.001, "general_suggestive": 0.01, "general_not_nsfw_not_suggestive": 0.989}
)


class FakeHive:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.default = Reply(body=CLEAN_VISUAL)
        self.received: list[Received] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                fake.received.append(
                    Received(
                        self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()
                    )
                )
                reply = fake.replies.popleft() if fake.replies else fake.default
                if reply.delay:
                    time.sleep(reply.delay)
                payload = reply.body
                if isinstance(payload, dict | list):
                    payload = json.dumps(payload).encode()
                elif isinstance(payload, str):
                    payload = payload.encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload or b"")))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload or b"")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/api/v2/task/sync"

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def __enter__(self) -> FakeHive:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
