"""The local livestream ingest (issue 16, DESIGN.md §13), against a real web process.

A private copy of the embedded default (SQLite + filesystem storage under a temporary
``POSTFLOW_VAR_DIR``) runs ``manage.py runserver --noreload``, which starts the ingest (nginx-rtmp +
the Python supervisor) on a free RTMP port. This process creates a livestream post through the API,
publishes it and pushes a real stream (ffmpeg ``-re``, ``testsrc2`` 1280x720 at 30 fps + ``sine``,
x264 with a keyframe every 2 s) for ``SECONDS``:

- glass-to-playlist latency: for each segment, the time from the encoder sending the segment's last
  frame (the encoder's own ``-progress`` clock: media time → wall time) to the segment being listed
  in the public playlist (polled every 50 ms). The first frame of a segment waits one segment more:
  ``live_latency_first_frame_s`` = that + the segment length; its baseline is the segment length
  itself (the least any segmenter can do), so ``live_latency_vs_segment_ratio`` = first-frame latency
  / segment length.
- CPU per live stream: CPU seconds per second of stream of the per-stream ffmpeg (read from
  ``/proc/<pid>/stat`` while it runs) when remuxing (``LIVESTREAM_TRANSCODE=false``, the default) and
  when transcoding to one 720p rung (``true``); the remux is the baseline of the ratio. nginx-rtmp's
  own CPU per second of stream is printed for scale.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
SECONDS = 24
SEGMENT = 2.0
TICK = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def _pids_matching(pattern: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if pattern in cmd:
                found.append(int(entry.name))
    return found


class Server:
    def __init__(self, *, transcode: bool):
        self.dir = Path(tempfile.mkdtemp(prefix="pf-bench-live-"))
        self.port, self.rtmp = _free_port(), _free_port()
        self.env = {
            **os.environ,
            "POSTFLOW_VAR_DIR": str(self.dir),
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DEBUG": "true",
            "MODERATION_MODE": "reactive_only",
            "LIVESTREAM_RTMP_PORT": str(self.rtmp),
            "LIVESTREAM_SEGMENT_SECONDS": str(SEGMENT),
            "LIVESTREAM_TRANSCODE": "true" if transcode else "false",
            "LOG_LEVEL": "WARNING",
        }
        self.env.pop("REDIS_URL", None)
        self.env.pop("DATABASE_URL", None)
        self.base = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        py = sys.executable
        subprocess.run([py, "manage.py", "migrate", "-v0"], cwd=ROOT, env=self.env, check=True)
        self.proc = subprocess.Popen(
            [py, "manage.py", "runserver", "--noreload", f"127.0.0.1:{self.port}"],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.base}/livez", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.3)
        return self

    def __exit__(self, *exc) -> None:
        os.killpg(self.proc.pid, 15)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
        shutil.rmtree(self.dir, ignore_errors=True)

    def live_post(self) -> tuple[dict, str]:
        r = requests.post(
            f"{self.base}/api/v1/auth/register",
            json={"username": "bench", "password": "correct-horse-bench-1"},
            timeout=10,
        )
        headers = {"Authorization": f"Token {r.json()['token']}"}
        for _ in range(50):  # the ingest starts with the server: wait for its heartbeat
            r = requests.post(
                f"{self.base}/api/v1/content/posts",
                json={"type": "livestream", "title": "bench"},
                headers=headers,
                timeout=10,
            )
            if r.status_code == 201:
                break
            time.sleep(0.2)
        post = r.json()
        assert r.status_code == 201, r.text
        requests.post(f"{self.base}/api/v1/content/posts/{post['id']}/publish", headers=headers, timeout=10)
        return post, headers["Authorization"]


def _push(url: str) -> tuple[subprocess.Popen, list[tuple[float, float]]]:
    cmd = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
        "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", str(SECONDS), "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
        "-g", "60", "-keyint_min", "60", "-b:v", "3000k", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "128k", "-progress", "pipe:1", "-stats_period", "0.1", "-f", "flv", url,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    clock: list[tuple[float, float]] = []  # (media seconds sent, wall time)

    def read() -> None:
        for line in proc.stdout:
            m = re.match(r"out_time_us=(\d+)", line)
            if m:
                clock.append((int(m.group(1)) / 1e6, time.monotonic()))

    threading.Thread(target=read, daemon=True).start()
    return proc, clock


def _wall_at(clock: list[tuple[float, float]], media: float) -> float | None:
    for sent, wall in clock:
        if sent >= media:
            return wall
    return None


def _one(transcode: bool) -> dict:
    with Server(transcode=transcode) as server:
        post, _ = server.live_post()
        ls = post["livestream"]
        encoder, clock = _push(f"{ls['ingest_url']}/{ls['stream_key']}")
        listed: dict[str, float] = {}
        cpu: dict[int, float] = {}
        nginx_before = {pid: _cpu_seconds(pid) or 0.0 for pid in _pids_matching("nginx: worker")}
        playback = None
        while encoder.poll() is None:
            if playback is None:
                r = requests.get(f"{server.base}/api/v1/content/posts/{post['id']}", timeout=5)
                playback = r.json()["livestream"]["playback_url"]
            if playback:
                text = requests.get(playback, timeout=5).text
                now = time.monotonic()
                for line in text.splitlines():
                    if line.endswith(".ts") and line not in listed:
                        listed[line] = now
            for pid in _pids_matching(f"127.0.0.1:{server.rtmp}/live/s"):
                value = _cpu_seconds(pid)
                if value is not None:
                    cpu[pid] = value
            time.sleep(0.05)
        nginx_cpu = sum((_cpu_seconds(pid) or before) - before for pid, before in nginx_before.items())
    lags = []
    for name, at in sorted(listed.items()):
        index = int(re.search(r"(\d+)", name).group(1))
        sent = _wall_at(clock, (index + 1) * SEGMENT)
        if sent is not None and index >= 1:  # the first segment includes the connection set-up
            lags.append(at - sent)
    return {
        "lag_last_frame": statistics.median(lags) if lags else float("nan"),
        "segments": len(listed),
        "ffmpeg_cpu_per_s": sum(cpu.values()) / SECONDS,
        "nginx_cpu_per_s": nginx_cpu / SECONDS,
    }


def run(report) -> None:
    if not (shutil.which("nginx") and Path("/usr/lib/nginx/modules/ngx_rtmp_module.so").exists()):
        print("   skipped: nginx with libnginx-mod-rtmp is not installed (make rtmp)")
        return
    remux = _one(transcode=False)
    transcode = _one(transcode=True)
    first = remux["lag_last_frame"] + SEGMENT
    report("live_latency_last_frame_s", round(remux["lag_last_frame"], 2), "s")
    report("live_latency_first_frame_s", round(first, 2), "s")
    report("live_latency_vs_segment_ratio", round(first / SEGMENT, 2), "x")
    report("live_latency_transcode_last_frame_s", round(transcode["lag_last_frame"], 2), "s")
    report("live_segments_listed", remux["segments"], "segments")
    report("live_cpu_remux_per_stream", round(remux["ffmpeg_cpu_per_s"], 3), "cores")
    report("live_cpu_transcode_per_stream", round(transcode["ffmpeg_cpu_per_s"], 3), "cores")
    report(
        "live_cpu_transcode_vs_remux_ratio",
        round(transcode["ffmpeg_cpu_per_s"] / max(remux["ffmpeg_cpu_per_s"], 1e-3), 1),
        "x",
    )
    report("live_cpu_nginx_per_stream", round(remux["nginx_cpu_per_s"], 3), "cores")
