"""A small Server-Sent Events client for the tests and benchmarks: reads ``/api/v1/events`` in a
thread and keeps what arrives (with the local arrival time), as a browser's EventSource would."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field

import requests


@dataclass
class Received:
    id: str
    event: str
    data: dict
    at: float  # time.time() on arrival


@dataclass
class SSEClient:
    base: str
    token: str
    last_event_id: str | None = None
    events: list[Received] = field(default_factory=list)
    heartbeats: int = 0
    error: BaseException | None = None
    ended: bool = False

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._response: requests.Response | None = None
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()

    def start(self) -> SSEClient:
        self.ended = False
        self.error = None
        self.connected.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self.connected.wait(30), f"SSE connect failed: {self.error!r}"
        return self

    def _run(self) -> None:
        headers = {"Authorization": f"Token {self.token}", "Accept": "text/event-stream"}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        try:
            with requests.get(
                f"{self.base}/api/v1/events", headers=headers, stream=True, timeout=(5, 60)
            ) as r:
                r.raise_for_status()
                self._response = r
                buf = b""
                for chunk in r.iter_content(chunk_size=None):
                    self.connected.set()
                    buf += chunk
                    while b"\n\n" in buf:
                        block, buf = buf.split(b"\n\n", 1)
                        self._frame(block.decode())
        except BaseException as exc:  # the server went away: that is what the fault test does
            self.error = exc
        finally:
            self.ended = True
            self.connected.set()
            with self._cond:
                self._cond.notify_all()

    def _frame(self, block: str) -> None:
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":"):
                if "heartbeat" in line:
                    self.heartbeats += 1
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
        if "event" not in fields:
            return
        with self._cond:
            self.events.append(
                Received(fields["id"], fields["event"], json.loads(fields["data"]), time.time())
            )
            self.last_event_id = fields["id"]
            self._cond.notify_all()

    def wait(self, predicate, timeout: float, what: str = "events"):
        """Wait until ``predicate(self.events)`` is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate(self.events)
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"timed out waiting for {what}; got {[(e.event, e.data) for e in self.events][-10:]}"
                        f" (error: {self.error!r})"
                    )
                self._cond.wait(min(remaining, 0.5))

    def close(self) -> None:
        if self._response is not None:
            with contextlib.suppress(Exception):  # unblock the reader at once
                self._response.raw._fp.fp.raw._sock.shutdown(2)
            self._response.close()
        if self._thread:
            self._thread.join(5)
