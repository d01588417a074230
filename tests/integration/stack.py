"""A real Postflow deployment on loopback for the system and fault tests: PostgreSQL (a database of
its own on the machine's server), a private redis-server, moto's S3 server, a fake Hive, gunicorn,
and ``rundramatiq`` worker pools as separate processes. The tests talk HTTP to it and read the
database directly, as an operator would."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
import requests

ROOT = Path(__file__).resolve().parents[2]
# Workers started with these settings load the fault-injection middleware (test code only).
FAULT_SETTINGS = "tests.integration.fault_settings"


def fault_env(**values: str) -> dict:
    """Environment for a worker with fault injection: ``fault_env(POSTFLOW_FAULT_KILL_SHA256=sha)``."""
    return {"DJANGO_SETTINGS_MODULE": FAULT_SETTINGS, **values}


PG_ADMIN_URL = os.environ.get("POSTFLOW_TEST_PG", "postgres://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, *, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # the thing may not be up yet
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def postgres_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except Exception:
        return False


class Redis:
    """A private redis-server we may stop and start (the broker-down fault) without touching the
    machine's own."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        wait_for(lambda: redis.Redis.from_url(self.url).ping(), timeout=10, what="redis")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def client(self):
        import redis

        return redis.Redis.from_url(self.url)


class Process:
    """A child process in its own process group, with its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict, log_dir: Path):
        self.name, self.args, self.env = name, args, env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Process:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Stack:
    def __init__(self, workdir: Path, *, s3_endpoint: str, bucket: str, hive_url: str):
        self.workdir = workdir
        self.db_name = f"postflow_it_{uuid.uuid4().hex[:10]}"
        self.db_url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + self.db_name
        self.redis = Redis(workdir)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO"))},
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DEBUG": "false",
            "SECRET_KEY": "integration-" + uuid.uuid4().hex * 2,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "false",
            "POSTFLOW_VAR_DIR": str(workdir / "var"),
            "DATABASE_URL": self.db_url,
            "REDIS_URL": self.redis.url,
            "DRAMATIQ_NAMESPACE": "postflow-it",
            "DRAMATIQ_HEARTBEAT_TIMEOUT_MS": "3000",
            "DRAMATIQ_MAINTENANCE_CHANCE": "1000000",
            "S3_BUCKET": bucket,
            "S3_ENDPOINT_URL": s3_endpoint,
            "S3_ACCESS_KEY_ID": "testing",
            "S3_SECRET_ACCESS_KEY": "testing",
            "S3_REGION": "us-east-1",
            "MODERATION_MODE": "reactive_only",
            "AI_PROVIDER": "hive",
            "HIVE_API_KEY": "test-key",
            "HIVE_API_URL": hive_url,
            "HIVE_TIMEOUT_SECONDS": "2",
            "HIVE_MAX_ATTEMPTS": "1",
            "AI_MAX_RETRIES": "1",
            "MEDIA_MAX_ATTEMPTS": "3",
            "PLATFORM_SETTINGS_CACHE_SECONDS": "1",
            "LOG_LEVEL": "INFO",
            "DRAMATIQ_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
        self.web: Process | None = None
        self.workers: list[Process] = []
        self._supervise = False
        self._supervisor: threading.Thread | None = None

    # --- life cycle -----------------------------------------------------------------------------
    def start(self) -> Stack:
        (self.workdir / "var").mkdir(parents=True, exist_ok=True)
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        self.redis.start()
        self.manage("migrate", "--noinput", "-v0")
        self.web = Process(
            "web",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "config.wsgi:application",
                "-b",
                f"127.0.0.1:{self.port}",
                "-w",
                "2",
                "--threads",
                "4",
                "--timeout",
                "60",
                "--graceful-timeout",
                "5",
            ],
            self.env,
            self.workdir,
        ).start()
        wait_for(
            lambda: requests.get(self.base + "/healthz", timeout=2).status_code == 200,
            timeout=60,
            what="gunicorn",
        )
        self.start_worker()
        return self

    def stop(self) -> None:
        self._supervise = False
        for w in self.workers:
            w.stop()
        if self.web:
            self.web.stop()
        self.redis.stop()
        try:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        except Exception:
            pass

    def start_worker(
        self, *queues: str, processes: int = 1, threads: int = 2, env: dict | None = None
    ) -> Process:
        args = [
            sys.executable,
            "manage.py",
            "rundramatiq",
            "--processes",
            str(processes),
            "--threads",
            str(threads),
            "--worker-shutdown-timeout",
            "5000",
            "--skip-checks",
        ]
        if queues:
            args += ["--queues", *queues]
        worker = Process(
            f"worker-{len(self.workers)}", args, {**self.env, **(env or {})}, self.workdir
        ).start()
        self.workers.append(worker)
        wait_for(
            lambda: worker.log().count("ready for action") >= processes or not worker.alive,
            timeout=60,
            what="worker start",
        )
        assert worker.alive, worker.log()[-3000:]
        return worker

    def kill_workers(self, sig: int = signal.SIGKILL) -> None:
        for w in self.workers:
            w.kill(sig)

    def supervise(self, **worker_kwargs) -> None:
        """Restart the worker pool whenever it exits, as systemd or Docker would."""
        self._supervise = True

        def loop():
            while self._supervise:
                if not any(w.alive for w in self.workers):
                    self.start_worker(**worker_kwargs)
                time.sleep(0.5)

        self._supervisor = threading.Thread(target=loop, daemon=True)
        self._supervisor.start()

    def stop_supervising(self) -> None:
        self._supervise = False
        if self._supervisor:
            self._supervisor.join(5)

    # --- helpers ------------------------------------------------------------------------------------
    def manage(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"manage.py {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
        return result

    def sql(self, query: str, *params):
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else None

    def set_platform(self, **fields) -> None:
        sets = ", ".join(f"{k} = %s" for k in fields)
        self.sql(f"UPDATE moderation_platformsettings SET {sets} WHERE id = 1", *fields.values())
        for key in self.redis.client().keys("*platform-settings*"):
            self.redis.client().delete(key)

    def session(self, username: str | None = None) -> requests.Session:
        s = requests.Session()
        username = username or f"u{uuid.uuid4().hex[:10]}"
        r = s.post(
            self.base + "/api/v1/auth/register", json={"username": username, "password": "a-long-pass-phrase"}
        )
        assert r.status_code == 201, r.text
        s.headers["Authorization"] = f"Token {r.json()['token']}"
        s.base = self.base  # type: ignore[attr-defined]
        s.user_id = r.json()["id"]  # type: ignore[attr-defined]
        return s

    def media_status(self, media_id: str) -> str:
        return self.sql("SELECT processing_status FROM media_media WHERE id = %s", media_id)[0][0]

    def wait_media(self, media_id: str, status: str = "ready", timeout: float = 90) -> None:
        def done():
            current = self.media_status(media_id)
            if current == "failed" and status != "failed":
                err = self.sql("SELECT processing_error FROM media_media WHERE id = %s", media_id)[0][0]
                raise AssertionError(f"media {media_id} failed: {err}\n{self.worker_logs()[-3000:]}")
            return current == status

        wait_for(done, timeout=timeout, what=f"media {media_id} {status}")

    def worker_pids(self) -> set[int]:
        """Pids of every live process of the worker pools (the dramatiq parent and its workers)."""
        pgids = {os.getpgid(w.proc.pid) for w in self.workers if w.alive}
        pids = set()
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                if os.getpgid(int(entry.name)) in pgids:
                    pids.add(int(entry.name))
            except (ProcessLookupError, PermissionError):
                continue
        return pids

    def worker_logs(self) -> str:
        return "\n".join(w.log() for w in self.workers)
