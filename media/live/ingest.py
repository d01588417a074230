"""The local RTMP ingest (DESIGN.md §13, provider ``local``): nginx with Debian's ``libnginx-mod-rtmp``
takes the encoders' RTMP, and this module, in one Python process, supervises it and does the rest.

    encoder --RTMP--> nginx-rtmp --on_publish (HTTP, loopback)--> Ingest._hook: key checked in the DB
                          |                                        302 -> the stream is renamed s<id>
                          +--RTMP (loopback)--> ffmpeg (one per stream): remux (or transcode) to
                                                  work/<id>/hls/ (MPEG-TS segments) + work/<id>/recording.ts
    Session thread: every new segment, then the playlist, is copied to storage (the filesystem, or
    uploaded to S3 as it appears) under LiveStream.hls_folder; when the encoder stops or the stream is
    ended (its row, or its post hidden), ffmpeg finishes, the recording goes to storage and only then
    becomes a ``livestream_recording`` medium (``services.livestream_finished``).

Runs as ``manage.py run_live_ingest`` (production) or inside ``manage.py runserver`` on the embedded
default (``start_embedded_ingest``). nginx, ffmpeg and the callbacks bind to loopback only; the RTMP
port is ``LIVESTREAM_RTMP_HOST:LIVESTREAM_RTMP_PORT``. A missing nginx or module is recorded on the
``LiveIngest`` row, whose reason the API gives with 503 ``livestream_unavailable``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from media import storage
from media.live import services
from media.live.models import LiveIngest, LiveStatus, LiveStream
from media.live.providers.local import INGEST_NAME, PLAYLIST
from media.processors.video import HLS_MIME

logger = logging.getLogger("postflow.live.ingest")

APP = "live"
WILDCARDS = ("0.0.0.0", "::", "")  # noqa: S104 - recognised, not bound
HEARTBEAT_SECONDS = 5.0
SYNC_SECONDS = 0.25
STOP_CHECK_SECONDS = 1.0
SEGMENT_MIME = "video/mp2t"
RECORDING = "recording.ts"
_SEGMENT_LINE = re.compile(r"^[A-Za-z0-9_.-]+\.ts$")


def _die_with_parent():
    """preexec_fn: the child gets SIGTERM when the process that started it dies (Linux)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None

    def set_pdeathsig() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return set_pdeathsig


def free_port(host: str = "127.0.0.1") -> int:
    """A free TCP port on ``host`` (for nginx's control server and the callbacks)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _connectable(host: str) -> str:
    """Where to reach a server bound to ``host`` from this machine (a wildcard: loopback)."""
    return "127.0.0.1" if host in WILDCARDS else host


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def remux_command(
    *, source: str, hls_dir: Path, recording: Path, transcode: bool, segment: float
) -> list[str]:
    """The ffmpeg argv for one live stream: HLS (MPEG-TS segments of about ``segment`` seconds, an
    ``event`` playlist that keeps every segment, so the tree is also the stream's full replay) and the
    recording (MPEG-TS: readable up to the last byte even if ffmpeg is killed). ``transcode`` re-encodes
    to one 720p H.264 rung with a keyframe every segment; otherwise the encoder's own H.264/AAC is
    copied (segments then cut at the encoder's keyframes: OBS "Keyframe Interval" 2 s)."""
    if transcode:
        video = [
            "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
            "-vf", "scale=-2:'min(720,ih)'", "-b:v", "2500k", "-maxrate", "3000k", "-bufsize", "3000k",
            "-force_key_frames", f"expr:gte(t,n_forced*{segment:g})", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "128k",
        ]  # fmt: skip
    else:
        video = ["-c", "copy"]
    return [
        "ffmpeg",
        "-hide_banner", "-nostdin", "-loglevel", "warning",
        "-rw_timeout", "15000000",
        "-i", source,
        "-map", "0:v:0?", "-map", "0:a:0?", *video,
        "-f", "hls", "-hls_time", f"{segment:g}", "-hls_list_size", "0", "-hls_playlist_type", "event",
        "-hls_flags", "independent_segments+temp_file",
        "-hls_segment_filename", str(hls_dir / "seg_%05d.ts"), str(hls_dir / PLAYLIST),
        "-map", "0:v:0?", "-map", "0:a:0?", "-c", "copy", "-f", "mpegts", str(recording),
    ]  # fmt: skip


def playlist_segments(text: str) -> list[str]:
    """The segment file names listed in an HLS media playlist, in order (other lines ignored)."""
    return [line.strip() for line in text.splitlines() if _SEGMENT_LINE.match(line.strip())]


class Session(threading.Thread):
    """One live stream: its ffmpeg, the copy of its HLS tree to storage, and its ending."""

    def __init__(self, ingest: Ingest, stream: LiveStream, client_id: str):
        super().__init__(name=f"live-{stream.pk}", daemon=True)
        self.ingest = ingest
        self.stream_id = str(stream.pk)
        self.owner_id = stream.owner_id
        self.client_id = client_id
        self.name_on_server = f"s{stream.pk.hex}"
        self.workdir = ingest.workdir / self.stream_id
        self.hls_dir = self.workdir / "hls"
        self.folder = storage.live_folder(self.owner_id, self.stream_id)
        self.uploaded: set[str] = set()
        self.proc: subprocess.Popen | None = None
        self.stop_reason = ""
        self.encoder_gone = threading.Event()
        self.first_segment_at: float | None = None
        self.watch_checked = time.monotonic()
        self._gone_at: float | None = None
        self.segment_times: dict[str, float] = {}  # segment -> monotonic time it was listed (bench)

    # -- lifecycle ---------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Make the work folder and remember the recording's medium id (so a restart reuses it)."""
        self.hls_dir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "media_id").write_text(str(uuid.uuid4()))
        (self.workdir / "folder").write_text(self.folder)

    def run(self) -> None:
        try:
            self._run()
        except Exception:
            logger.exception("livestream %s: session crashed", self.stream_id)
            with contextlib.suppress(Exception):
                finalize(self.workdir, self.stream_id, self.owner_id, reason="the ingest failed")
        finally:
            self.ingest.session_done(self)
            connection.close()

    def _run(self) -> None:
        source = f"rtmp://127.0.0.1:{self.ingest.rtmp_port}/{APP}/{self.name_on_server}"
        cmd = remux_command(
            source=source,
            hls_dir=self.hls_dir,
            recording=self.workdir / RECORDING,
            transcode=self.ingest.transcode,
            segment=settings.LIVESTREAM_SEGMENT_SECONDS,
        )
        log = (self.workdir / "ffmpeg.log").open("ab")
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                preexec_fn=_die_with_parent(),
            )
        except OSError as exc:
            services.livestream_failed(stream_id=self.stream_id, error=f"ffmpeg could not start: {exc}")
            self.ingest.drop_publisher(self.name_on_server)
            return
        finally:
            log.close()
        services.livestream_went_live(stream_id=self.stream_id, hls_folder=self.folder)
        last_check = 0.0
        while self.proc.poll() is None:
            time.sleep(SYNC_SECONDS)
            self.sync()
            now = time.monotonic()
            if now - last_check >= STOP_CHECK_SECONDS and not self.stop_reason:
                last_check = now
                close_old_connections()
                reason = services.livestream_should_stop(self.stream_id)
                if reason:
                    self.stop(reason)
                elif self.encoder_gone.is_set() and now - self.encoder_gone_at() >= 3:
                    self.stop("the encoder stopped")  # ffmpeg did not see the end by itself
                elif now - self.watch_checked >= 5:
                    self.watch_checked = now
                    services.livestream_watch_overdue(self.stream_id)
        self.sync()
        reason = self.stop_reason or "the encoder stopped"
        finalize(self.workdir, self.stream_id, self.owner_id, reason=reason)

    def encoder_gone_at(self) -> float:
        if self._gone_at is None:
            self._gone_at = time.monotonic()
        return self._gone_at

    def stop(self, reason: str) -> None:
        """Drop the encoder and let ffmpeg finish cleanly (its playlist gets ``#EXT-X-ENDLIST``)."""
        self.stop_reason = reason
        logger.info("livestream %s: stopping (%s)", self.stream_id, reason)
        self.ingest.drop_publisher(self.name_on_server)
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            threading.Timer(10, lambda: proc.poll() is None and proc.kill()).start()

    # -- copying the tree ----------------------------------------------------------------------------

    def sync(self) -> None:
        """Store segments that ffmpeg has listed and not yet stored, then the playlist: a player never
        sees a segment in the playlist before it is in storage."""
        playlist = self.hls_dir / PLAYLIST
        try:
            text = playlist.read_text()
        except FileNotFoundError:
            return
        new = [s for s in playlist_segments(text) if s not in self.uploaded]
        if not new and self.uploaded and "#EXT-X-ENDLIST" not in text:
            return
        for name in new:
            path = self.hls_dir / name
            if not path.exists():
                return  # listed before written (should not happen with temp_file): next round
            self.segment_times.setdefault(name, time.monotonic())
            storage.save(f"{self.folder}/{name}", path, SEGMENT_MIME)
            self.uploaded.add(name)
        storage.save(f"{self.folder}/{PLAYLIST}", playlist, HLS_MIME)
        if new:
            if self.first_segment_at is None:
                self.first_segment_at = time.monotonic()
            close_old_connections()
            services.livestream_segment_seen(self.stream_id)
            # The local copy of a stored segment is not needed any more (the recording has every byte).
            for name in new[:-1]:
                (self.hls_dir / name).unlink(missing_ok=True)


def finalize(workdir: Path, stream_id: str, owner_id: int, *, reason: str) -> None:
    """Close the live playlist (``#EXT-X-ENDLIST``), store the recording (if any bytes were recorded)
    at its medium's original key, then record the end (``services.livestream_finished``, which makes
    and queues the medium), then delete the work folder. Safe to repeat after a crash at any point:
    the medium id is kept in the work folder."""
    _final_playlist(workdir)
    recording = workdir / RECORDING
    media_id_file = workdir / "media_id"
    info = None
    if recording.exists() and recording.stat().st_size > 0 and media_id_file.exists():
        media_id = media_id_file.read_text().strip()
        key = storage.media_key(owner_id, media_id, "original", "ts")
        sha = storage.file_sha256(recording)
        if not storage.exists(key) or storage.sha256_of(key) != sha:
            storage.save(key, recording, SEGMENT_MIME)
        info = {
            "media_id": media_id,
            "key": key,
            "size_bytes": recording.stat().st_size,
            "sha256": sha,
            "mime_type": SEGMENT_MIME,
        }
    close_old_connections()
    services.livestream_finished(stream_id=stream_id, reason=reason, recording=info)
    shutil.rmtree(workdir, ignore_errors=True)


def _final_playlist(workdir: Path) -> None:
    """Store what the last playlist listed (segments still on this disk), closed with ``#EXT-X-ENDLIST``
    (ffmpeg writes it only when it ends cleanly)."""
    folder_file, playlist = workdir / "folder", workdir / "hls" / PLAYLIST
    if not folder_file.exists() or not playlist.exists():
        return
    folder = folder_file.read_text().strip()
    text = playlist.read_text()
    for name in playlist_segments(text):
        path = workdir / "hls" / name
        if path.exists():
            storage.save(f"{folder}/{name}", path, SEGMENT_MIME)
    if "#EXT-X-ENDLIST" not in text:
        playlist.write_text(text.rstrip("\n") + "\n#EXT-X-ENDLIST\n")
    storage.save(f"{folder}/{PLAYLIST}", playlist, HLS_MIME)


class Ingest:
    """nginx-rtmp + the callbacks + one ``Session`` per live stream, with a heartbeat in the DB."""

    def __init__(
        self,
        *,
        rtmp_host: str | None = None,
        rtmp_port: int | None = None,
        workdir: Path | None = None,
        transcode: bool | None = None,
        nginx: str | None = None,
        module: str | None = None,
    ):
        self.rtmp_host = rtmp_host or settings.LIVESTREAM_RTMP_HOST
        self.rtmp_port = rtmp_port or settings.LIVESTREAM_RTMP_PORT
        self.workdir = Path(workdir or settings.LIVESTREAM_WORK_DIR)
        self.transcode = settings.LIVESTREAM_TRANSCODE if transcode is None else transcode
        self.nginx_bin = nginx or settings.LIVESTREAM_NGINX
        self.module = module or settings.LIVESTREAM_NGINX_MODULE
        self.nginx_dir = self.workdir / "nginx"
        self.hook_port = 0
        self.control_port = 0
        self.nginx: subprocess.Popen | None = None
        self.http: ThreadingHTTPServer | None = None
        self.sessions: dict[str, Session] = {}  # nginx client id -> session
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.error = ""

    # -- start / stop -------------------------------------------------------------------------------

    def start(self) -> bool:
        """Start nginx and the callbacks, recover streams a previous run left, and beat. False (and the
        reason on the ``LiveIngest`` row) when the ingest cannot run here."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        problem = self._missing()
        if problem:
            self._record(running=False, error=problem)
            logger.warning("local livestream ingest not started: %s", problem)
            return False
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.http.daemon_threads = True
        self.hook_port = self.http.server_address[1]
        threading.Thread(target=self.http.serve_forever, name="live-hooks", daemon=True).start()
        self.control_port = free_port()
        if not self._start_nginx():
            self.http.shutdown()
            self._record(running=False, error=self.error)
            return False
        self.recover()
        self._record(running=True, error="")
        threading.Thread(target=self._beat, name="live-heartbeat", daemon=True).start()
        logger.info("local livestream ingest on rtmp://%s:%s/%s", self.rtmp_host, self.rtmp_port, APP)
        return True

    def _missing(self) -> str | None:
        if shutil.which(self.nginx_bin) is None:
            return f"nginx is not installed ({self.nginx_bin!r} not found; apt-get install libnginx-mod-rtmp)"
        if not Path(self.module).exists():
            return f"nginx's RTMP module is not installed ({self.module}; apt-get install libnginx-mod-rtmp)"
        if shutil.which("ffmpeg") is None:
            return "ffmpeg is not installed (apt-get install ffmpeg)"
        return None

    def config(self) -> str:
        """nginx.conf: RTMP on the configured address, the control API and the callbacks on loopback."""
        d = self.nginx_dir
        temp = "\n".join(
            f"  {name}_temp_path {d / 'tmp' / name};"
            for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        hook = f"http://127.0.0.1:{self.hook_port}"
        return f"""load_module {self.module};
worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
{temp}
  server {{
    listen 127.0.0.1:{self.control_port};
    location /control {{ rtmp_control all; }}
    location /stat {{ rtmp_stat all; }}
  }}
}}
rtmp {{
  server {{
    listen {self.rtmp_host}:{self.rtmp_port};
    chunk_size 4096;
    notify_method post;
    application {APP} {{
      live on;
      record off;
      allow play 127.0.0.1;
      deny play all;
      idle_streams on;
      drop_idle_publisher 20s;
      on_publish {hook}/publish;
      on_publish_done {hook}/publish_done;
    }}
  }}
}}
"""

    def _start_nginx(self) -> bool:
        (self.nginx_dir / "tmp").mkdir(parents=True, exist_ok=True)
        conf = self.nginx_dir / "nginx.conf"
        conf.write_text(self.config())
        log = (self.nginx_dir / "nginx.out").open("ab")
        try:
            self.nginx = subprocess.Popen(
                [
                    self.nginx_bin,
                    "-p",
                    str(self.nginx_dir),
                    "-e",
                    str(self.nginx_dir / "error.log"),
                    "-c",
                    str(conf),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent(),
            )
        except OSError as exc:
            self.error = f"nginx could not start: {exc}"
            return False
        finally:
            log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.nginx.poll() is not None:
                break
            if _port_open(_connectable(self.rtmp_host), self.rtmp_port):
                return True
            time.sleep(0.1)
        tail = ""
        for name in ("nginx.out", "error.log"):
            with contextlib.suppress(OSError):
                tail += (self.nginx_dir / name).read_text()[-600:]
        if self.nginx.poll() is None:
            self.nginx.terminate()
        self.error = f"nginx did not start on {self.rtmp_host}:{self.rtmp_port}: {tail.strip()[-400:]}"
        return False

    def stop(self) -> None:
        """End every session (recordings are stored), stop nginx, and say so on the row."""
        self.stopping.set()
        with self.lock:
            sessions = list(self.sessions.values())
        for s in sessions:
            s.stop("the ingest is shutting down")
        for s in sessions:
            s.join(timeout=30)
        if self.nginx is not None and self.nginx.poll() is None:
            self.nginx.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.nginx.wait(10)
        if self.http is not None:
            self.http.shutdown()
        with contextlib.suppress(Exception):
            self._record(running=False, error="stopped")

    def _record(self, *, running: bool, error: str) -> None:
        close_old_connections()
        LiveIngest.objects.update_or_create(
            name=INGEST_NAME,
            defaults={
                "rtmp_url": f"rtmp://{self.rtmp_host}:{self.rtmp_port}/{APP}",
                "hostname": socket.gethostname(),
                "pid": os.getpid(),
                "started_at": timezone.now(),
                "heartbeat_at": timezone.now(),
                "running": running,
                "error": error,
            },
        )

    def _beat(self) -> None:
        while not self.stopping.wait(HEARTBEAT_SECONDS):
            try:
                close_old_connections()
                if self.nginx is not None and self.nginx.poll() is not None:
                    logger.warning("nginx exited (%s); restarting it", self.nginx.returncode)
                    if not self._start_nginx():
                        LiveIngest.objects.filter(name=INGEST_NAME).update(running=False, error=self.error)
                        continue
                LiveIngest.objects.filter(name=INGEST_NAME).update(
                    heartbeat_at=timezone.now(), running=True, pid=os.getpid(), error=""
                )
            except Exception:
                logger.exception("livestream ingest heartbeat failed")
            finally:
                connection.close()

    def recover(self) -> None:
        """Streams a previous run of the ingest left behind (it was killed): store what each recorded
        and end it; streams that went live with nothing on this disk are ended without a recording."""
        close_old_connections()
        for entry in sorted(self.workdir.iterdir()):
            if entry.name == "nginx" or not entry.is_dir():
                continue
            row = LiveStream.objects.filter(pk=entry.name).values("owner_id", "recording_media_id").first()
            if row is None or row["recording_media_id"]:
                shutil.rmtree(entry, ignore_errors=True)
                continue
            logger.info("livestream %s: recovering what an earlier ingest recorded", entry.name)
            finalize(entry, entry.name, row["owner_id"], reason="the ingest restarted")
        for stream in LiveStream.objects.filter(provider="local", status=LiveStatus.LIVE):
            services.livestream_finished(stream_id=stream.pk, reason="the ingest restarted", recording=None)

    # -- nginx's callbacks ----------------------------------------------------------------------------

    def _handler(self):
        ingest = self

        class Hook(BaseHTTPRequestHandler):
            def log_message(self, fmt, *args):  # noqa: A002 - the stdlib's signature
                logger.debug("hook: " + fmt, *args)

            def do_POST(self):  # noqa: N802 - the stdlib's name
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in urllib.parse.parse_qs(self.rfile.read(length).decode()).items()}
                try:
                    status, location = ingest.on_hook(self.path, form)
                except Exception:
                    logger.exception("livestream hook %s failed", self.path)
                    status, location = 500, None
                finally:
                    connection.close()
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Hook

    def on_hook(self, path: str, form: dict[str, str]) -> tuple[int, str | None]:
        """nginx-rtmp's ``on_publish`` (2xx accepts, 3xx renames the stream, 4xx refuses) and
        ``on_publish_done``. Returns (status, Location)."""
        close_old_connections()
        client = form.get("clientid", "")
        if path == "/publish":
            if self.stopping.is_set():
                return 503, None
            try:
                stream = services.livestream_publish_check(form.get("name", ""))
            except services.PublishRefused as exc:
                logger.info("refused a publish from %s: %s", form.get("addr"), exc)
                return 403, None
            with self.lock:
                if any(s.stream_id == str(stream.pk) for s in self.sessions.values()):
                    return 403, None  # a second encoder for the same stream
                session = Session(self, stream, client)
                session.prepare()
                self.sessions[client] = session
            session.start()
            # The remuxer subscribes to the new name before the encoder's first frame is accepted
            # (idle_streams): the recording and the live tree start at the stream's first keyframe.
            self.wait_for_player(session.name_on_server, timeout=5)
            return 302, session.name_on_server
        if path == "/publish_done":
            with self.lock:
                session = self.sessions.get(client)
            if session is not None:
                session.encoder_gone.set()
            return 200, None
        return 404, None

    def players(self, name: str) -> int:
        """How many clients nginx-rtmp counts on the stream ``name`` (its ``rtmp_stat`` XML)."""
        import xml.etree.ElementTree as ET  # noqa: N817, S405 - nginx's own XML on loopback

        url = f"http://127.0.0.1:{self.control_port}/stat"
        try:
            root = ET.fromstring(urllib.request.urlopen(url, timeout=2).read())  # noqa: S310, S314
        except (OSError, ET.ParseError):
            return 0
        for stream in root.iter("stream"):
            if stream.findtext("name") == name:
                return int(stream.findtext("nclients") or 0)
        return 0

    def wait_for_player(self, name: str, *, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until a client is subscribed to ``name``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.players(name) >= 1:
                return True
            time.sleep(0.05)
        logger.warning("stream %s: the remuxer did not subscribe within %ss", name, timeout)
        return False

    def drop_publisher(self, name: str) -> None:
        """Disconnect the encoder publishing ``name`` (nginx-rtmp's control API)."""
        url = f"http://127.0.0.1:{self.control_port}/control/drop/publisher?app={APP}&name={name}"
        with contextlib.suppress(OSError):
            urllib.request.urlopen(url, timeout=5).read()  # noqa: S310 - loopback, fixed scheme

    def session_done(self, session: Session) -> None:
        with self.lock:
            if self.sessions.get(session.client_id) is session:
                del self.sessions[session.client_id]


_embedded: Ingest | None = None
_embedded_lock = threading.Lock()


def start_embedded_ingest() -> Ingest | None:
    """Start (once per process) the local ingest inside this process, for ``runserver`` on the
    embedded default. Returns it, or None when it could not start (the reason is on the row)."""
    global _embedded
    with _embedded_lock:
        if _embedded is None:
            ingest = Ingest()
            if not ingest.start():
                return None
            _embedded = ingest
    return _embedded
