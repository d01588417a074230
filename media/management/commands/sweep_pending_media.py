from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from config.broker import drain_embedded, is_embedded
from content.sweep import sweep_stuck_posts
from media.locks import LockHeld
from media.models import MediaKind, ProcessingStatus
from media.sweep import sweep_pending_media


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


class Command(BaseCommand):
    help = "Re-queue media that is pending, failed (attempts left) or stuck in processing."

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="Show what would be queued; change nothing."
        )
        parser.add_argument("--statuses", default="pending,failed", help="Comma list of pending,failed.")
        parser.add_argument(
            "--stuck-minutes",
            type=int,
            default=settings.MEDIA_STUCK_MINUTES,
            help="Re-queue 'processing' rows idle this long (negative: never; default MEDIA_STUCK_MINUTES).",
        )
        parser.add_argument("--kinds", default="", help="Comma list of media kinds (default: every kind).")
        parser.add_argument("--limit", type=int, default=None, help="At most this many media.")
        parser.add_argument(
            "--include-exhausted",
            action="store_true",
            help="Also failed media that used every attempt (their attempts restart).",
        )
        parser.add_argument(
            "--pending-grace-minutes",
            type=float,
            default=5,
            help="Leave pending media younger than this to the message already queued for it.",
        )

    def handle(self, *args, **o):
        statuses = _csv(o["statuses"])
        bad = [s for s in statuses if s not in (ProcessingStatus.PENDING, ProcessingStatus.FAILED)]
        if bad:
            raise CommandError(f"--statuses takes pending and/or failed, not {', '.join(bad)}.")
        kinds = _csv(o["kinds"]) or None
        if kinds and (unknown := [k for k in kinds if k not in MediaKind.values]):
            raise CommandError(f"Unknown kind(s): {', '.join(unknown)}; use {', '.join(MediaKind.values)}.")
        try:
            report = sweep_pending_media(
                dry_run=o["dry_run"],
                statuses=statuses,
                stuck_minutes=o["stuck_minutes"],
                kinds=kinds,
                limit=o["limit"],
                include_exhausted=o["include_exhausted"],
                pending_grace_minutes=o["pending_grace_minutes"],
            )
        except LockHeld as exc:
            self.stderr.write(f"Another sweep is running ({exc.holder}); nothing done.")
            raise SystemExit(3) from None
        self.stdout.write(
            f"{'media id':36}  {'kind':6}  {'status':10}  {'tries':>5}  {'idle min':>8}  action"
        )
        for r in report.rows:
            self.stdout.write(
                f"{r.media_id:36}  {r.kind:6}  {r.status:10}  {r.attempts:>5}  {r.age_minutes:>8}  {r.action}"
            )
        for kind, n in report.skipped_kinds.items():
            self.stdout.write(f"skipped {n} {kind} media: no processor for that kind")
        verb = "would queue" if report.dry_run else "queued"
        self.stdout.write(self.style.SUCCESS(f"{len(report.rows)} matched, {verb} {len(report.rows)}."))
        posts = sweep_stuck_posts(dry_run=o["dry_run"], grace_minutes=o["pending_grace_minutes"])
        settle = "would settle" if o["dry_run"] else "settled"
        for post_id in posts.settled:
            self.stdout.write(f"post {post_id}: media all finished but still processing: {settle}")
        for post_id in posts.reviews_queued:
            self.stdout.write(f"post {post_id}: waiting for an AI review never queued: {verb} its review")
        if (report.queued or posts.settled or posts.reviews_queued) and not o["dry_run"] and is_embedded():
            self.stdout.write("No REDIS_URL: processing them in this process before exiting...")
            drain_embedded()
            self.stdout.write("Done.")
