"""The scheduler process: runs ``sweep_pending_media`` on ``media_sweep_cron`` while
``media_sweep_schedule_enabled`` is on (platform settings, editable in the admin; re-read every
minute, so changes need no restart), and publishes due scheduled posts every
``SCHEDULED_PUBLISH_INTERVAL_SECONDS``. One per deployment is enough; a second one is harmless,
because the sweep takes a lock and each scheduled post goes public under its row lock, once."""

from __future__ import annotations

import logging

from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from content.idempotency import purge_expired_idempotency_keys
from content.services import publish_due_posts
from content.sweep import sweep_stuck_posts
from media.locks import LockHeld
from media.revocation import media_revoke_overdue
from media.sweep import sweep_pending_media
from moderation.platform import get_platform_settings

logger = logging.getLogger("postflow.scheduler")
SWEEP_JOB = "sweep_pending_media"


def run_publish_due() -> None:
    """Publish every cleared scheduled post whose time has come (``content.services``)."""
    try:
        publish_due_posts()
    except Exception:  # a database hiccup must not stop the scheduler; the next run retries
        logger.exception("publishing due scheduled posts failed")


def run_sweep() -> None:
    if not get_platform_settings(fresh=True).media_sweep_schedule_enabled:
        return
    try:
        report = sweep_pending_media()
    except LockHeld as exc:
        logger.info("scheduled sweep skipped: %s", exc)
        return
    posts = sweep_stuck_posts()
    logger.info(
        "scheduled sweep queued %s media, settled %s posts, queued %s reviews",
        report.queued,
        len(posts.settled),
        len(posts.reviews_queued),
        extra={
            "event": "sweep",
            "queued": report.queued,
            "skipped_kinds": report.skipped_kinds,
            "posts_settled": len(posts.settled),
            "reviews_queued": len(posts.reviews_queued),
        },
    )


class Command(BaseCommand):
    help = "Run scheduled jobs (the media sweep, due scheduled posts) until stopped."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="Run each job once, then exit.")

    def handle(self, *args, once: bool, **options):
        if once:
            run_sweep()
            run_publish_due()
            media_revoke_overdue()
            return
        scheduler = BlockingScheduler(timezone="UTC")
        state = {"cron": None, "enabled": None}

        def sync() -> None:
            ps = get_platform_settings(fresh=True)
            if (ps.media_sweep_cron, ps.media_sweep_schedule_enabled) == (state["cron"], state["enabled"]):
                return
            try:
                trigger = CronTrigger.from_crontab(ps.media_sweep_cron, timezone="UTC")
            except ValueError as exc:
                logger.error("media_sweep_cron %r is not a valid cron line: %s", ps.media_sweep_cron, exc)
                return
            scheduler.add_job(
                run_sweep, trigger, id=SWEEP_JOB, replace_existing=True, max_instances=1, coalesce=True
            )
            state.update(cron=ps.media_sweep_cron, enabled=ps.media_sweep_schedule_enabled)
            logger.info(
                "media sweep %s on %r",
                "enabled" if ps.media_sweep_schedule_enabled else "disabled",
                ps.media_sweep_cron,
            )

        try:
            sync()
        except Exception as exc:
            raise CommandError(f"Cannot read platform settings: {exc}") from exc
        scheduler.add_job(sync, "interval", seconds=60, id="sync-settings")
        # Not behind the sweep switch: a hidden post's media URLs must stop working (media.revocation).
        scheduler.add_job(media_revoke_overdue, "interval", seconds=60, id="revoke-media-urls", coalesce=True)
        scheduler.add_job(
            run_publish_due,
            "interval",
            seconds=settings.SCHEDULED_PUBLISH_INTERVAL_SECONDS,
            id="publish-due-posts",
            coalesce=True,
            max_instances=1,
        )
        scheduler.add_job(
            purge_expired_idempotency_keys, "interval", hours=1, id="idempotency-keys", coalesce=True
        )
        self.stdout.write("Scheduler running (Ctrl-C to stop).")
        try:
            scheduler.start()
        except (KeyboardInterrupt, SystemExit):
            scheduler.shutdown(wait=False)
