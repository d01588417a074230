"""How far a medium's processing has come, 0–1, from what the running attempt records.

The runner persists the attempt's steps in ``ProcessorRun.steps`` about once a second
(``media.processing.progress_writer``); a step that runs ffmpeg carries ffmpeg's own ``percent``
(``media.processors.ffmpeg.progress_values``). Nothing here is simulated: the value is the finished
steps' share of the expected work plus the running step's reported fraction.
"""

from __future__ import annotations

from media.models import Media, MediaKind, ProcessingStatus, ProcessorRun, RunResult

# Relative cost of each step of a typical run, per processor (the step names the processors log).
# Steps of a run that are not listed (optional ones) weigh DEFAULT_WEIGHT and count once they appear.
STEP_WEIGHTS: dict[str, dict[str, float]] = {
    "video": {"probe": 2, "transcode": 90, "poster_thumb": 4},
    "audio": {"probe": 2, "measure": 30, "encode": 60},
    "image": {"open": 2, "inspect": 1, "decode": 10, "normalize": 10, "placeholder": 3, "variant:": 40},
}
DEFAULT_WEIGHT = 2.0
# Which processor runs each kind (a link preview's thumbnail goes through the image pipeline).
KIND_PROCESSOR = {MediaKind.THUMBNAIL: "image"}


def _weight(plan: dict[str, float], name: str) -> float:
    for prefix, weight in plan.items():
        if prefix.endswith(":") and name.startswith(prefix):
            return weight / 4  # one of the (typically four) variant steps
        if name == prefix:
            return weight
    return DEFAULT_WEIGHT


def steps_progress(kind: str, steps: list[dict]) -> float:
    """Fraction (0–1, two decimals, below 1 until the run ends) of the work ``steps`` show done."""
    plan = STEP_WEIGHTS.get(KIND_PROCESSOR.get(kind, kind), {})
    seen = {s.get("name", "") for s in steps}
    done = total = 0.0
    for step in steps:
        w = _weight(plan, step.get("name", ""))
        total += w
        if step.get("status") in ("ok", "skipped"):
            done += w
        elif step.get("status") == "running":
            percent = (step.get("output") or {}).get("percent")
            if isinstance(percent, (int, float)):
                done += w * max(0.0, min(100.0, float(percent))) / 100
    for name, weight in plan.items():
        if name.endswith(":"):
            if not any(s.startswith(name) for s in seen):
                total += weight
        elif name not in seen:
            total += weight
    if total <= 0:
        return 0.0
    return round(min(0.99, done / total), 2)


def media_progress(media: Media) -> float | None:
    """0 while ``pending``, the running attempt's progress while ``processing``, 1 when ``ready``,
    None when ``failed``."""
    if media.processing_status == ProcessingStatus.READY:
        return 1.0
    if media.processing_status == ProcessingStatus.PENDING:
        return 0.0
    if media.processing_status != ProcessingStatus.PROCESSING:
        return None
    run = (
        ProcessorRun.objects.filter(media_id=media.pk, result=RunResult.RUNNING)
        .order_by("-started_at")
        .only("steps")
        .first()
    )
    return steps_progress(media.kind, run.steps if run else [])
