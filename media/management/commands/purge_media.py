from django.conf import settings
from django.core.management.base import BaseCommand

from media.purge import purge_media


class Command(BaseCommand):
    help = (
        "Delete stored bytes of media detached or whose post was deleted more than --retention-days "
        "ago (not of rejected/quarantined posts: evidence), of expired, unattached uploads, and "
        "idempotency keys older than 24 h."
    )

    def add_arguments(self, parser):
        parser.add_argument("--retention-days", type=int, default=settings.MEDIA_RETENTION_DAYS)
        parser.add_argument("--dry-run", action="store_true")

    def handle(self, *args, retention_days, dry_run, **options):
        r = purge_media(retention_days=retention_days, dry_run=dry_run)
        verb = "would purge" if dry_run else "purged"
        self.stdout.write(
            f"{verb} {r.media} media ({r.objects} objects), {r.uploads} expired uploads "
            f"and {r.idempotency_keys} expired idempotency keys."
        )
