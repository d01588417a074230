"""Bounded load test of live events and webhooks on loopback (``make loadtest``; issue 14):

- ``latency``: 1,000 real transitions (text posts published in reactive mode) committed in this
  process; p50/p95 from each transition's COMMIT to the SSE client (gunicorn's ASGI worker reading
  the Redis Stream) receiving its ``post.updated`` event. Target p95 ≤ 100 ms.
- ``idle``: ``--idle`` (1,000) idle SSE connections held by ONE web process for ``--hold`` (60) s; the
  p95 of ``GET content/posts`` must stay within 1.5x of the same process with no connections, and the
  process's RSS growth ≤ 150 MB.
- ``webhooks``: 1,000 events to a local receiver that de-duplicates by ``X-Postflow-Delivery`` and
  counts: every delivery exactly once, p95 send delay (event created → received) ≤ 1 s; then the
  receiver is down for ``--down`` (120) s while events keep coming, and nothing is lost once it is back.

The production topology of ``tests/integration/stack.py`` (PostgreSQL, a private Redis, moto S3, a fake
Hive, rundramatiq workers) plus one ``gunicorn -k asgi`` web process. ``--only latency,idle`` runs a
subset. Prints ``BENCH`` lines; never fails on a timing (the machine may be busy: see ``uptime``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
import requests  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

from tests.integration.sse import SSEClient  # noqa: E402
from tests.integration.stack import Process, Stack, free_port, wait_for  # noqa: E402
from tests.moderation.fake_hive import FakeHive  # noqa: E402


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(len(values) * p)) - 1))]


def bench(name: str, value: float, unit: str, target: str = "") -> None:
    print(f"BENCH {name} {value} {unit}" + (f"   (target {target})" if target else ""), flush=True)


def start_asgi_web(stack: Stack, name: str) -> tuple[Process, str]:
    port = free_port()
    args = [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn_conf.py", "config.asgi:application"]
    args += ["-k", "asgi", "-b", f"127.0.0.1:{port}", "-w", "1", "--worker-connections", "5000"]
    web = Process(name, args, stack.env, stack.workdir).start()
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: requests.get(base + "/livez", timeout=5).ok, timeout=60, what=name)
    return web, base


def worker_pid(master_pid: int) -> int:
    out = subprocess.run(["pgrep", "-P", str(master_pid)], capture_output=True, text=True).stdout.split()
    return int(out[0])


def rss_mb(pid: int) -> float:
    text = pathlib.Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024


def setup_django(stack: Stack) -> None:
    """This process acts as a web process of the stack (its database, Redis, broker)."""
    os.environ.update({k: v for k, v in stack.env.items() if k not in ("DJANGO_SETTINGS_MODULE",)})
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    import django

    django.setup()


def make_user(username: str):
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    user = get_user_model().objects.create_user(username=username, password="x-long-pass-phrase")
    return user, Token.objects.create(user=user).key


# --- latency ---------------------------------------------------------------------------------------


def run_latency(stack: Stack, base: str, n: int) -> None:
    from django.db import transaction

    from content import services
    from content.models import Post

    user, token = make_user(f"lat{os.getpid()}")
    posts = Post.objects.bulk_create(
        Post(author=user, type="text", body="hi", title=f"p{i}") for i in range(n)
    )
    client = SSEClient(base, token).start()
    committed: dict[str, float] = {}
    for post in posts:
        with transaction.atomic():
            # Registered first, so it runs first after COMMIT (before the event's XADD).
            transaction.on_commit(lambda pid=str(post.pk): committed.__setitem__(pid, time.time()))
            services.post_publish(post_id=post.pk, actor=user)
        time.sleep(0.002)
    ids = {str(p.pk) for p in posts}

    def all_in(events):
        return ids <= {e.data["post_id"] for e in events if e.event == "post.updated"}

    client.wait(all_in, timeout=120, what="every post.updated")
    client.close()
    got = {e.data["post_id"]: e.at for e in client.events if e.event == "post.updated"}
    lat = [(got[pid] - committed[pid]) * 1000 for pid in ids]
    bench("events_latency_n", len(lat), "events")
    bench("events_latency_p50", round(statistics.median(lat), 1), "ms")
    bench("events_latency_p95", round(pct(lat, 0.95), 1), "ms", "<= 100")


# --- idle connections ------------------------------------------------------------------------------


def feed_p95(base: str, n: int = 200) -> float:
    s = requests.Session()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        assert s.get(base + "/api/v1/content/posts", timeout=30).ok
        times.append((time.perf_counter() - t) * 1000)
    return pct(times, 0.95)


def run_idle(stack: Stack, n_conns: int, hold: float) -> None:
    _, token = make_user(f"idle{os.getpid()}")
    web, base = start_asgi_web(stack, "web-idle")
    try:
        pid = worker_pid(web.proc.pid)
        feed_p95(base, 50)  # warm up
        baseline = feed_p95(base)
        rss_before = rss_mb(pid)
        port = int(base.rsplit(":", 1)[1])
        request = (
            f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Token {token}\r\n"
            "Accept: text/event-stream\r\n\r\n"
        ).encode()
        socks = []
        for _ in range(n_conns):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(request)
            socks.append(sock)
        opened = 0
        for sock in socks:
            if b"200 OK" in sock.recv(4096):
                opened += 1
            sock.setblocking(False)
        time.sleep(2)
        during, samples = [], []
        deadline = time.monotonic() + hold
        while time.monotonic() < deadline:
            during.append(feed_p95(base, 50))
            samples.append(rss_mb(pid))
            for sock in socks:  # drain heartbeats, as a client would
                with contextlib.suppress(BlockingIOError):
                    sock.recv(65536)
            time.sleep(1)
        alive = 0
        for sock in socks:
            try:
                alive += sock.recv(65536) != b""
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
        loaded = statistics.median(during)
        bench("events_idle_connections_open", opened, "connections")
        bench("events_idle_connections_alive_after_hold", alive, "connections")
        bench("events_idle_feed_p95_baseline", round(baseline, 1), "ms")
        bench("events_idle_feed_p95_with_connections", round(loaded, 1), "ms")
        bench("events_idle_feed_p95_ratio", round(loaded / baseline, 2), "x", "<= 1.5")
        bench("events_idle_rss_growth", round(max(samples) - rss_before, 1), "MB", "<= 150")
        for sock in socks:
            sock.close()
    finally:
        web.stop()


# --- webhooks --------------------------------------------------------------------------------------


class Receiver:
    def __init__(self, port: int = 0):
        self.lock = threading.Lock()
        self.seen: dict[str, int] = {}
        self.delays: list[float] = []
        self.port = port
        self.server = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                did = self.headers["X-Postflow-Delivery"]
                created = json.loads(body)["created_at"]
                from datetime import datetime

                delay = time.time() - datetime.fromisoformat(created).timestamp()
                with receiver.lock:
                    receiver.seen[did] = receiver.seen.get(did, 0) + 1
                    if receiver.seen[did] == 1:
                        receiver.delays.append(delay)
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_workers(stack: Stack) -> None:
    """The webhook and notification pool; a busy machine may take longer than the stack's 60 s to
    boot it."""
    try:
        stack.start_worker("webhooks", "notifications", processes=2, threads=8)
    except AssertionError:
        worker = stack.workers[-1]
        wait_for(lambda: worker.log().count("ready for action") >= 2, timeout=300, what="webhook workers")


def run_webhooks(stack: Stack, n: int, down: float, rate: float) -> None:
    from content import notifications, webhooks
    from content.models import DeliveryStatus, WebhookDelivery

    user, _ = make_user(f"hook{os.getpid()}")
    receiver = Receiver()
    receiver.start()
    hook, _secret = webhooks.webhook_create(
        user=user, url=f"http://127.0.0.1:{receiver.port}/in", events=["notification"]
    )

    def emit(k: int) -> None:
        for _ in range(k):
            notifications.notify(user=user, type="post_published", reason="load")
            time.sleep(1 / rate)

    emit(n)
    wait_for(lambda: len(receiver.seen) >= n, timeout=300, interval=0.5, what="every delivery")
    dupes = sum(c - 1 for c in receiver.seen.values())
    bench("webhooks_delivered", len(receiver.seen), "deliveries")
    bench("webhooks_duplicates", dupes, "deliveries", "0 (exactly once per id)")
    bench("webhooks_send_delay_p50", round(statistics.median(receiver.delays) * 1000, 1), "ms")
    bench("webhooks_send_delay_p95", round(pct(receiver.delays, 0.95) * 1000, 1), "ms", "<= 1000")

    # The receiver goes down for `down` seconds while events keep coming.
    receiver.stop()
    down_started = time.monotonic()
    before = set(WebhookDelivery.objects.filter(webhook=hook).values_list("pk", flat=True))
    emit(200)
    time.sleep(max(0.0, down - (time.monotonic() - down_started)))
    receiver.start()
    back = time.monotonic()
    expected = {str(pk) for pk in WebhookDelivery.objects.filter(webhook=hook).values_list("pk", flat=True)}
    new = expected - {str(pk) for pk in before}
    wait_for(
        lambda: expected <= set(receiver.seen), timeout=600, interval=1, what="deliveries after the outage"
    )
    hook.refresh_from_db()
    bench("webhooks_outage_events", len(new), "deliveries")
    bench("webhooks_outage_lost", len(expected - set(receiver.seen)), "deliveries", "0")
    bench("webhooks_outage_catch_up", round(time.monotonic() - back, 1), "s after the receiver is back")
    bench("webhooks_hook_still_active", int(hook.is_active), "bool", "1")
    failed = WebhookDelivery.objects.filter(webhook=hook, status=DeliveryStatus.FAILED).count()
    bench("webhooks_failed_deliveries", failed, "deliveries", "0")
    receiver.stop()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="latency,idle,webhooks")
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--hold", type=float, default=60)
    parser.add_argument("--hooks", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100, help="webhook events per second")
    parser.add_argument("--down", type=float, default=120)
    args = parser.parse_args()
    only = {s.strip() for s in args.only.split(",")}
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)

    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    ).create_bucket(Bucket="postflow-events")
    with FakeHive() as hive:
        stack = Stack(
            pathlib.Path(tempfile.mkdtemp(prefix="postflow-events-")),
            s3_endpoint=endpoint,
            bucket="postflow-events",
            hive_url=hive.url,
        )
        stack.env.update(
            LOG_LEVEL="WARNING",
            # DRAMATIQ_LOG_LEVEL stays INFO: the stack waits for the workers' "ready for action" line.
            REQUEST_LOG_LEVEL="WARNING",
            # Webhooks to a receiver on loopback over http: the bench's receiver, never production.
            DEBUG="true",
            OUTBOUND_ALLOW_PRIVATE_NETWORKS="true",
            MODERATION_MODE="reactive_only",
        )
        try:
            # Workers only for the webhooks (started there): latency and idle need none.
            start_worker, stack.start_worker = stack.start_worker, lambda *a, **k: None
            stack.start()
            stack.start_worker = start_worker
            setup_django(stack)
            if "latency" in only:
                print("== latency", flush=True)
                web, base = start_asgi_web(stack, "web-latency")
                try:
                    run_latency(stack, base, args.events)
                finally:
                    web.stop()
            if "idle" in only:
                print("== idle", flush=True)
                run_idle(stack, args.idle, args.hold)
            if "webhooks" in only:
                print("== webhooks", flush=True)
                start_workers(stack)
                run_webhooks(stack, args.hooks, args.down, args.rate)
        finally:
            stack.stop()
            moto.stop()
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
