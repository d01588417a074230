"""Settings for the fault suite's workers: production settings plus a fault-injection middleware.
Nothing here is reachable from production code; the stack starts workers with
``DJANGO_SETTINGS_MODULE=tests.integration.fault_settings`` when a test asks for faults."""

import logging
import os
import signal

import dramatiq

from config.settings import *  # noqa: F403
from config.settings import DRAMATIQ_BROKER, env_list

# A worker that is handed media with one of these sha256s claims it, then dies like an OOM-killed
# worker (SIGKILL): the claim is what a real crash mid-job leaves behind.
POSTFLOW_FAULT_KILL_SHA256 = env_list("POSTFLOW_FAULT_KILL_SHA256", "")

DRAMATIQ_BROKER = {
    **DRAMATIQ_BROKER,
    "MIDDLEWARE": [*DRAMATIQ_BROKER["MIDDLEWARE"], "tests.integration.fault_settings.KillOnSha256"],
}


class KillOnSha256(dramatiq.Middleware):
    """Runs after ``media.middleware.JobContext``, so the claim records this message's id."""

    def before_process_message(self, broker, message):
        from django.conf import settings

        from media import processing
        from media.models import Media

        kind = message.actor_name.removeprefix("process_").removesuffix("_media")
        if message.actor_name != processing.actor_name(kind) or not message.args:
            return
        sha = Media.objects.filter(pk=message.args[0]).values_list("sha256", flat=True).first()
        if not sha or sha not in settings.POSTFLOW_FAULT_KILL_SHA256:
            return
        if processing.claim(message.args[0], kind) is not None:
            logging.getLogger("postflow.faults").error("fault injection: killing this worker")
            os.kill(os.getpid(), signal.SIGKILL)


# Images with one of these sha256s take POSTFLOW_FAULT_SLOW_SECONDS longer to process (reporting
# progress meanwhile, as a long real step does): heavy media, deterministically.
POSTFLOW_FAULT_SLOW_SHA256 = env_list("POSTFLOW_FAULT_SLOW_SHA256", "")
POSTFLOW_FAULT_SLOW_SECONDS = float(os.environ.get("POSTFLOW_FAULT_SLOW_SECONDS", "10"))


class SlowImages(dramatiq.Middleware):
    """Swaps the image processor for ``SlowImageProcessor`` in this worker."""

    def before_worker_boot(self, broker, worker):
        from media import processors

        processors.PROCESSOR_PATHS["image"] = "tests.integration.fault_settings.SlowImageProcessor"


DRAMATIQ_BROKER["MIDDLEWARE"].append("tests.integration.fault_settings.SlowImages")


def _slow_image_processor():
    import hashlib
    import time

    from django.conf import settings

    from media.processors.image import ImageProcessor

    class SlowImageProcessor(ImageProcessor):
        def process(self, *, source, workdir, steps):
            if hashlib.sha256(source.read_bytes()).hexdigest() in settings.POSTFLOW_FAULT_SLOW_SHA256:
                with steps.step("fault_slow", seconds=settings.POSTFLOW_FAULT_SLOW_SECONDS) as record:
                    deadline = time.monotonic() + settings.POSTFLOW_FAULT_SLOW_SECONDS
                    while time.monotonic() < deadline:
                        time.sleep(0.5)
                        steps.progress(record, left_s=round(deadline - time.monotonic(), 1))
            return super().process(source=source, workdir=workdir, steps=steps)

    return SlowImageProcessor


def __getattr__(name):
    # Built on first use: the image processor imports Django-side code not ready at settings time.
    if name == "SlowImageProcessor":
        return _slow_image_processor()
    raise AttributeError(name)
