"""``runserver`` that also runs the embedded worker when no Redis is configured, so one command
gives a working web + worker on a fresh machine."""

import os

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
        super().inner_run(*args, **options)
