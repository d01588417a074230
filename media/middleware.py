"""Dramatiq middleware for what every job shares: which message it is, how long it ran, how much
memory the worker peaked at. Registered in ``config/settings.py``; the media pipeline reads the
current job from here instead of reaching into the broker itself."""

from __future__ import annotations

import logging
import resource
import time
from contextvars import ContextVar
from dataclasses import dataclass, field

import dramatiq

logger = logging.getLogger("postflow.jobs")


@dataclass
class Job:
    """The message a worker thread is processing. Outside a worker (a test calling the pipeline
    directly) every field is empty and ``message`` is None."""

    message_id: str = ""
    actor_name: str = ""
    queue_name: str = ""
    retries: int = 0
    time_limit_ms: int | None = None
    message: dramatiq.Message | None = None
    started: float = field(default_factory=time.perf_counter)

    def elapsed_ms(self) -> float:
        """Milliseconds since the job started (since this object was made, outside a worker)."""
        return round((time.perf_counter() - self.started) * 1000, 1)


_current: ContextVar[Job | None] = ContextVar("postflow_job", default=None)


def current_job() -> Job:
    """The job of this worker thread, or an empty ``Job`` outside one."""
    return _current.get() or Job()


def peak_memory_kb() -> int:
    """The worker process's peak resident memory, or its largest child's (ffmpeg), in KiB
    (``getrusage``'s ``ru_maxrss`` on Linux)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children)


class JobContext(dramatiq.Middleware):
    """Sets ``current_job()`` for each message, logs its duration and peak memory when it ends, and
    reaps what dead workers left behind when a worker boots."""

    def before_process_message(self, broker, message) -> None:
        try:
            time_limit = message.options.get("time_limit") or broker.get_actor(
                message.actor_name
            ).options.get("time_limit")
        except Exception:  # an unknown actor: Dramatiq reports it itself
            time_limit = None
        _current.set(
            Job(
                message_id=message.message_id,
                actor_name=message.actor_name,
                queue_name=message.queue_name,
                retries=message.options.get("retries", 0),
                time_limit_ms=time_limit,
                message=message,
            )
        )

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        job = _current.get()
        _current.set(None)
        if job is None or job.message_id != message.message_id:
            return
        logger.info(
            "job %s %s in %.0f ms",
            message.actor_name,
            "failed" if exception is not None else "done",
            job.elapsed_ms(),
            extra={
                "event": "job",
                "message_id": message.message_id,
                "actor": message.actor_name,
                "queue": message.queue_name,
                "retries": job.retries,
                "duration_ms": job.elapsed_ms(),
                "peak_memory_kb": peak_memory_kb(),
                "error_class": type(exception).__name__ if exception is not None else "",
            },
        )

    after_skip_message = after_process_message

    def after_worker_boot(self, broker, worker) -> None:
        # A worker that was killed (SIGKILL, OOM) left scratch folders and maybe ffmpeg children.
        from media.scratch import reap_orphans

        try:
            reap_orphans()
        except Exception:  # never keep a worker from starting
            logger.exception("reaping dead workers' leftovers failed")
