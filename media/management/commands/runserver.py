"""``runserver`` that also runs the embedded worker when no Redis is configured, so one command
gives a working web + worker on a fresh machine."""

import logging
import os
import threading

from django.contrib.staticfiles.management.commands.runserver import Command as StaticRunserver

from config.broker import is_embedded, start_embedded_worker


def recover_embedded_work(out) -> None:
    """The in-memory broker died with the previous process: whatever was queued or running then is
    pending or stuck now. Re-queue it (nothing else runs work in the embedded runtime)."""
    from content.sweep import sweep_stuck_posts
    from media.locks import LockHeld
    from media.sweep import sweep_pending_media

    try:
        report = sweep_pending_media(stuck_minutes=0, pending_grace_minutes=0, trust_heartbeats=False)
        posts = sweep_stuck_posts(grace_minutes=0)
    except LockHeld:
        return
    except Exception as exc:  # e.g. a database not migrated yet
        out.write(f"Skipped recovering earlier work: {exc}")
        return
    if report.queued or posts.settled or posts.reviews_queued:
        out.write(
            f"Recovered earlier work: {report.queued} media re-queued, {len(posts.settled)} posts settled, "
            f"{len(posts.reviews_queued)} AI reviews re-queued."
        )


_publisher: threading.Thread | None = None


def start_embedded_publisher(interval: float) -> threading.Thread:
    """The embedded runtime has no scheduler process: a daemon thread publishes due scheduled posts
    every ``interval`` seconds (``content.services.publish_due_posts``, exactly once per post even if
    a ``run_scheduler`` runs too)."""
    global _publisher
    if _publisher is not None and _publisher.is_alive():
        return _publisher
    from django.db import connection

    from content.services import publish_due_posts

    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            try:
                publish_due_posts()
            except Exception:
                logging.getLogger("postflow.scheduler").exception("embedded scheduled publish failed")
            finally:
                connection.close()

    _publisher = threading.Thread(target=loop, name="scheduled-publish", daemon=True)
    _publisher.start()
    return _publisher


def start_local_ingest(out) -> None:
    """The embedded default also runs the local livestream ingest (nginx-rtmp, supervised here), as
    it runs the worker: no extra command. When it cannot start, everything else still does, and
    creating a livestream answers 503 ``livestream_unavailable`` with the reason."""
    from django.conf import settings

    if settings.LIVESTREAM_PROVIDER != "local" or not settings.LIVESTREAM_EMBEDDED_INGEST:
        return
    try:
        from media.live.ingest import start_embedded_ingest

        ingest = start_embedded_ingest()
    except Exception as exc:  # e.g. a database not migrated yet
        out.write(f"Livestream ingest: not started ({exc}).")
        return
    if ingest is None:
        from media.live.models import LiveIngest

        row = LiveIngest.objects.filter(name="local").first()
        out.write(f"Livestream ingest: not started ({row.error if row else 'unknown reason'}).")
    else:
        out.write(f"Livestream ingest: rtmp://{ingest.rtmp_host}:{ingest.rtmp_port}/live (nginx-rtmp).")


class Command(StaticRunserver):
    help = StaticRunserver.help + " With no REDIS_URL, also runs the in-process Dramatiq worker."

    def inner_run(self, *args, **options):
        # With the autoreloader, inner_run runs in the child that serves requests: start it there.
        if is_embedded() and (os.environ.get("RUN_MAIN") == "true" or not options.get("use_reloader")):
            start_embedded_worker()
            self.stdout.write(
                "Embedded worker: running in this process (set REDIS_URL for separate workers)."
            )
            recover_embedded_work(self.stdout)
            from django.conf import settings

            start_embedded_publisher(settings.SCHEDULED_PUBLISH_INTERVAL_SECONDS)
            start_local_ingest(self.stdout)
        super().inner_run(*args, **options)
