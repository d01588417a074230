"""``runserver`` that also runs the embedded worker when no Redis is configured, so one command
gives a working web + worker on a fresh machine."""

import os

from django.contrib.staticfiles.management.commands.runserver import Command as StaticRunserver

from config.broker import is_embedded, start_embedded_worker


class Command(StaticRunserver):
    help = StaticRunserver.help + " With no REDIS_URL, also runs the in-process Dramatiq worker."

    def inner_run(self, *args, **options):
        # With the autoreloader, inner_run runs in the child that serves requests: start it there.
        if is_embedded() and (os.environ.get("RUN_MAIN") == "true" or not options.get("use_reloader")):
            start_embedded_worker()
            self.stdout.write(
                "Embedded worker: running in this process (set REDIS_URL for separate workers)."
            )
        super().inner_run(*args, **options)
