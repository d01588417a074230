"""Bounded load test on loopback (``make loadtest``): N creators each create an image post, upload
the photo straight to S3 with a presigned POST, attach it and publish, against the production
topology (gunicorn, 2 worker processes, PostgreSQL, a private Redis, moto S3, a fake Hive that says
"clean"). Reports throughput and p50/p95 from attach to published, and checks every post ended in
a final state. Stops by itself: at most --posts posts and --timeout seconds."""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import pathlib
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import boto3  # noqa: E402
import requests  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402
from PIL import Image  # noqa: E402

from tests.integration.stack import Stack, free_port, wait_for  # noqa: E402
from tests.moderation.fake_hive import FakeHive  # noqa: E402


def photo(seed: int) -> bytes:
    img = Image.effect_noise((1200, 900), 30 + seed % 20).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


STEP_TIMES: dict[str, list[float]] = {}


class _step:
    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        self.t = time.perf_counter()

    def __exit__(self, *exc):
        STEP_TIMES.setdefault(self.name, []).append(time.perf_counter() - self.t)


def creator_flow(s: requests.Session, i: int) -> tuple[str, float]:
    with _step("create"):
        post = s.post(f"{s.base}/api/v1/content/posts", json={"type": "image", "title": f"load {i}"})
    post.raise_for_status()
    post_id = post.json()["id"]
    data = photo(i)
    with _step("upload_request"):
        up = s.post(
            f"{s.base}/api/v1/content/uploads",
            json={
                "filename": f"{i}.jpg",
                "content_type": "image/jpeg",
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            },
        )
    up.raise_for_status()
    target = up.json()
    with _step("s3_post"):
        requests.post(
            target["url"], data=target["fields"], files={"file": ("x.jpg", data, "image/jpeg")}
        ).raise_for_status()
    with _step("attach"):
        attach = s.post(
            f"{s.base}/api/v1/content/posts/{post_id}/media", json={"upload_id": target["upload_id"]}
        )
    attach.raise_for_status()
    attached_at = time.time()
    with _step("publish"):
        s.post(f"{s.base}/api/v1/content/posts/{post_id}/publish").raise_for_status()
    return post_id, attached_at


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()

    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    ).create_bucket(Bucket="postflow-load")
    with FakeHive() as hive:
        stack = Stack(
            pathlib.Path(tempfile.mkdtemp(prefix="postflow-load-")),
            s3_endpoint=endpoint,
            bucket="postflow-load",
            hive_url=hive.url,
        )
        stack.env["PLATFORM_SETTINGS_CACHE_SECONDS"] = "30"
        stack.env["THROTTLE_AUTH"] = "100000/min"
        stack.env["LOG_LEVEL"] = "WARNING"
        stack.env["MODERATION_MODE"] = "ai_prescreen"
        try:
            stack.start()
            stack.kill_workers()
            stack.start_worker(processes=2, threads=2)
            print(f"load: {args.posts} creators, {args.clients} concurrent clients, 2 worker processes")
            with ThreadPoolExecutor(args.clients) as pool:  # accounts exist before the clock starts
                sessions = list(
                    pool.map(lambda i: stack.session(f"load{i}-{os.getpid()}"), range(args.posts))
                )
            started = time.time()
            with ThreadPoolExecutor(args.clients) as pool:
                results = list(pool.map(lambda i: creator_flow(sessions[i], i), range(args.posts)))
            submitted = time.time()
            ids = [r[0] for r in results]

            def all_final():
                rows = stack.sql(
                    "SELECT status, count(*) FROM content_post WHERE id = ANY(%s::uuid[]) GROUP BY status",
                    ids,
                )
                counts = dict(rows)
                return (
                    counts
                    if sum(counts.get(s, 0) for s in ("published", "quarantined", "rejected")) == len(ids)
                    else None
                )

            remaining = args.timeout - (time.time() - started)
            counts = wait_for(all_final, timeout=max(remaining, 1), interval=1, what="every post final")
            done = time.time()
            published = dict(
                stack.sql(
                    "SELECT id::text, extract(epoch from published_at) FROM content_post "
                    "WHERE id = ANY(%s::uuid[])",
                    ids,
                )
            )
            latencies = sorted(float(published[pid]) - at for pid, at in results if published.get(pid))
            p50 = statistics.median(latencies)
            p95 = latencies[max(0, int(len(latencies) * 0.95) - 1)]
            throughput = len(ids) / (done - started)
            for name, values in STEP_TIMES.items():
                values.sort()
                print(
                    f"  {name:15} p50 {statistics.median(values) * 1000:7.0f} ms   "
                    f"p95 {values[int(len(values) * 0.95) - 1] * 1000:7.0f} ms"
                )
            print(f"submitted in {submitted - started:.1f}s, all final after {done - started:.1f}s: {counts}")
            for name, value, unit in [
                ("loadtest_posts", len(ids), "posts"),
                ("loadtest_throughput", round(throughput, 2), "posts/s"),
                ("loadtest_attach_to_published_p50", round(p50, 2), "s"),
                ("loadtest_attach_to_published_p95", round(p95, 2), "s"),
                ("loadtest_api_submit_rate", round(len(ids) / (submitted - started), 2), "flows/s"),
            ]:
                print(f"BENCH {name} {value} {unit}")
            return 0 if counts.get("published") == len(ids) else 1
        finally:
            stack.stop()
            moto.stop()


if __name__ == "__main__":
    sys.exit(main())
