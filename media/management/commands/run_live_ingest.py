"""``manage.py run_live_ingest``: the local livestream ingest as its own process (production)."""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand, CommandError

from media.live.ingest import Ingest
from media.live.models import LiveIngest


class Command(BaseCommand):
    help = (
        "Run the local RTMP ingest (nginx with libnginx-mod-rtmp, supervised): checks stream keys, "
        "writes live HLS to storage, turns recordings into media. Stops cleanly on SIGTERM/SIGINT."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--port", type=int, default=None, help="RTMP port (default LIVESTREAM_RTMP_PORT)."
        )
        parser.add_argument("--host", default=None, help="RTMP address (default LIVESTREAM_RTMP_HOST).")

    def handle(self, *args, **options):
        ingest = Ingest(rtmp_host=options["host"], rtmp_port=options["port"])
        if not ingest.start():
            row = LiveIngest.objects.filter(name="local").first()
            raise CommandError(f"The livestream ingest cannot start: {row.error if row else 'unknown'}")
        self.stdout.write(f"Livestream ingest on rtmp://{ingest.rtmp_host}:{ingest.rtmp_port}/live")
        done = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: done.set())
        done.wait()
        self.stdout.write("Stopping: ending live streams and storing their recordings...")
        ingest.stop()
