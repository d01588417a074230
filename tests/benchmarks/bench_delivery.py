"""Media delivery and resumable uploads (issue 12, DESIGN.md §8), against a real web process.

A private copy of the embedded default (SQLite + filesystem storage under a temporary
``POSTFLOW_VAR_DIR``) runs ``manage.py runserver --noreload``; this process is its client:

- feed reload: 20 published image posts read twice through the API, every ``thumb``/``small`` URL
  fetched as a browser would (a fresh cached copy is not asked for again; a stale one is revalidated
  with its ``ETag``): media bytes on the second load / the first.
- range cost: 64 KiB at 90 % of a 200 MB (and a 20 MB) file through ``/m/``, against the same path
  serving a whole 64 KiB object (same HTTP and Django work, the same bytes read from storage): the
  ratio shows the cost does not grow with the file. The raw storage read (seek + read, no HTTP) is
  printed for scale.
- resumable: a 300 MB upload whose connection dies at 60 % (mid-part) and is resumed after asking
  ``GET content/uploads/{id}`` what arrived: bytes sent / file size, and the web process's peak RSS
  (``VmHWM``) through ``complete`` (parts streamed into one file).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024

SEED = r"""
import io, json, os
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from content.models import Post
from media.models import Media
from media import storage
from django.utils import timezone
import hashlib

User = get_user_model()
u = User.objects.create_user("bench", password="x-bench-password-1")
token = Token.objects.get_or_create(user=u)[0].key
def blob(n, seed):
    import random
    r = random.Random(seed)
    return r.randbytes(n)
for i in range(20):
    p = Post.objects.create(author=u, type="image", status="published", published_at=timezone.now())
    m = Media.objects.create(post=p, owner=u, kind="image", original_key=f"media/{u.pk}/x{i}/original.jpg",
        mime_type="image/jpeg", size_bytes=1, sha256="0" * 64, processing_status="ready")
    variants = {}
    for name, size in (("thumb", 20_000), ("small", 80_000), ("large", 400_000)):
        key = storage.media_key(u.pk, m.pk, name, "webp")
        data = blob(size, hash((i, name)))
        storage.save(key, io.BytesIO(data), "image/webp")
        variants[name] = {"key": key, "mime_type": "image/webp", "width": 1, "height": 1, "size_bytes": size,
                          "sha256": hashlib.sha256(data).hexdigest()}
    m.variants = variants
    m.save()
big = {}
for label, size in (("64k", 64 * 1024), ("20mb", 20 * 1024 * 1024), ("200mb", 200 * 1024 * 1024)):
    p = Post.objects.create(author=u, type="video", status="published", published_at=timezone.now())
    m = Media.objects.create(post=p, owner=u, kind="video", original_key=f"media/{u.pk}/y/original.mp4",
        mime_type="video/mp4", size_bytes=size, sha256="0" * 64, processing_status="ready")
    key = storage.media_key(u.pk, m.pk, "720p", "mp4")
    path = storage.backend().store.path(key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        for _ in range(max(1, size // (1024 * 1024))):
            fh.write(os.urandom(min(size, 1024 * 1024)))
    m.variants = {"720p": {"key": key, "mime_type": "video/mp4", "width": 1, "height": 1, "size_bytes": size,
                           "sha256": "%064x" % size}}
    m.save()
    big[label] = {"media": str(m.pk), "path": path}
print("SEED" + json.dumps({"token": token, "user": u.pk, "big": big}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    def __init__(self, var: Path):
        self.port = _free_port()
        self.env = {
            **os.environ,
            "POSTFLOW_VAR_DIR": str(var),
            "DEBUG": "1",
            "SECRET_KEY": "bench-" + "x" * 50,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "UPLOAD_PART_SIZE_BYTES": str(16 * MiB),
            "MEDIA_MAX_VIDEO_BYTES": str(2048 * MiB),
            "DJANGO_SETTINGS_MODULE": "config.settings",
        }
        for name in ("DATABASE_URL", "REDIS_URL", "S3_BUCKET"):
            self.env.pop(name, None)
        self.proc: subprocess.Popen | None = None
        self.log = var.parent / "runserver.log"

    def manage(self, *args: str) -> str:
        out = subprocess.run(  # noqa: S603
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
            check=True, timeout=900,
        )  # fmt: skip
        return out.stdout

    def start(self) -> None:
        self._log_file = self.log.open("wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{self.port}"],
            cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=self._log_file,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.get(f"{self.url}/livez", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.2)
        raise RuntimeError("runserver did not start: " + self.log.read_text()[-2000:])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self._log_file.close()


def _feed_urls(session: requests.Session, base: str, user: int) -> list[str]:
    urls, url = [], f"{base}/api/v1/content/posts?author={user}&type=image"
    while url:
        page = session.get(url, timeout=30).json()
        for post in page["results"]:
            for media in post["media"]:
                urls += [media["variants"][n]["url"] for n in ("thumb", "small")]
        url = page.get("next")
    return urls


def _browser_load(session, urls, cache: dict) -> int:
    """Fetch as a browser: a fresh cached copy is used as is; a stale one is revalidated."""
    transferred = 0
    for url in urls:
        entry = cache.get(url)
        if entry and entry["fresh_until"] > time.time():
            continue
        headers = {"If-None-Match": entry["etag"]} if entry else {}
        r = session.get(url, headers=headers, timeout=30)
        transferred += len(r.content)
        if r.status_code == 200:
            max_age = int(r.headers["Cache-Control"].split("max-age=")[1].split(",")[0])
            cache[url] = {"etag": r.headers["ETag"], "fresh_until": time.time() + max_age}
    return transferred


def _median_ms(fn, n: int = 30) -> float:
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def _resumable(server: _Server, token: str, tmp: Path) -> tuple[float, float]:
    size = 300 * MiB
    src = tmp / "upload.bin"
    with src.open("wb") as fh:
        fh.write(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00")  # sniffs as a JPEG; never attached here
        for _ in range(size // MiB):
            fh.write(os.urandom(MiB))
        fh.truncate(size)
    api = requests.Session()
    api.headers["Authorization"] = f"Token {token}"
    base = f"{server.url}/api/v1/content/uploads"
    start = api.post(
        base, json={"filename": "big.mp4", "content_type": "video/mp4", "size": size, "resumable": True}
    ).json()
    upload, part_size, count = start["upload_id"], start["part_size"], start["part_count"]
    targets = {
        t["part_number"]: t
        for t in api.post(f"{base}/{upload}/parts", json={"part_numbers": list(range(1, count + 1))}).json()[
            "parts"
        ]
    }
    sent = 0
    cut = int(size * 0.6)

    def send(n: int, limit: int | None = None) -> None:
        nonlocal sent
        with src.open("rb") as fh:
            fh.seek((n - 1) * part_size)
            body = fh.read(part_size)
        if limit is None:
            r = requests.put(targets[n]["url"], data=body, timeout=120)
            r.raise_for_status()
            sent += len(body)
            return
        # the client dies mid-part: a raw socket sends the head and part of the body, then closes
        url = urlsplit(targets[n]["url"])
        with socket.create_connection((url.hostname, url.port)) as s:
            s.sendall(
                f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
            )
            s.sendall(body[:limit])
        sent += limit

    for n in range(1, count + 1):
        end = n * part_size
        if end > cut:
            send(n, limit=cut - (n - 1) * part_size)
            break
        send(n)
    time.sleep(0.5)
    state = api.get(f"{base}/{upload}").json()
    have = {p["part_number"] for p in state["parts"]}
    for n in range(1, count + 1):
        if n not in have:
            send(n)
    parts = [
        {"part_number": p["part_number"], "etag": p["etag"]}
        for p in api.get(f"{base}/{upload}").json()["parts"]
    ]
    r = api.post(f"{base}/{upload}/complete", json={"parts": parts}, timeout=600)
    r.raise_for_status()
    assert r.json()["received_size"] == size, r.json()
    return sent / size, server.peak_rss_mb()


def run(report) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmpdir:
        tmp = Path(tmpdir)
        server = _Server(tmp / "var")
        server.manage("migrate", "--noinput")
        seed = json.loads(server.manage("shell", "-c", SEED).split("SEED", 1)[1])
        server.start()
        try:
            browser = requests.Session()
            cache: dict = {}
            urls1 = _feed_urls(browser, server.url, seed["user"])
            first = _browser_load(browser, urls1, cache)
            urls2 = _feed_urls(browser, server.url, seed["user"])
            second = _browser_load(browser, urls2, cache)
            report("delivery_feed_reload_bytes_ratio", round(second / first, 4), "ratio")
            # the same, for a browser whose cache expired: every URL revalidated (304s)
            stale = {u: dict(e, fresh_until=0) for u, e in cache.items()}
            report(
                "delivery_feed_revalidate_bytes_ratio",
                round(_browser_load(browser, urls2, stale) / first, 4),
                "ratio",
            )

            media_urls = {}
            for label, info in seed["big"].items():
                data = browser.get(f"{server.url}/api/v1/content/media/{info['media']}").json()
                media_urls[label] = data["variants"]["720p"]["url"]
            size200 = 200 * MiB

            def ranged(label: str, size: int):
                offset = int(size * 0.9)
                return lambda: (
                    browser.get(
                        media_urls[label], headers={"Range": f"bytes={offset}-{offset + 65535}"}, timeout=30
                    ).content
                )

            small_ms = _median_ms(lambda: browser.get(media_urls["64k"], timeout=30).content)
            r200 = _median_ms(ranged("200mb", size200))
            r20 = _median_ms(ranged("20mb", 20 * MiB))

            def raw():
                with open(seed["big"]["200mb"]["path"], "rb") as fh:  # noqa: PTH123
                    fh.seek(int(size200 * 0.9))
                    fh.read(65536)

            report("delivery_range_64k_at_90pct_200mb_ms", round(r200, 2), "ms")
            report("delivery_range_64k_at_90pct_20mb_ms", round(r20, 2), "ms")
            report("delivery_whole_64k_object_ms", round(small_ms, 2), "ms")
            report("delivery_raw_storage_64k_read_ms", round(_median_ms(raw), 3), "ms")
            report("delivery_range_vs_storage_ratio", round(r200 / small_ms, 3), "ratio")
            report("delivery_range_200mb_vs_20mb_ratio", round(r200 / r20, 3), "ratio")

            ratio, rss = _resumable(server, seed["token"], tmp)
            report("delivery_resumable_sent_ratio", round(ratio, 4), "ratio")
            report("delivery_complete_peak_rss_mb", round(rss, 1), "MB")
        finally:
            server.stop()
