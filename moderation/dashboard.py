"""The pipeline dashboard (DESIGN.md §11): what operators need to see of processing and review, each
chart from ONE aggregate query, drawn as server-rendered SVG (no JavaScript, no CDN).

Charts: media processed per hour by kind (``ProcessorRun``), p50/p95 processing time by kind
(PostgreSQL ``percentile_cont``; elsewhere computed from one bounded, ordered query), failures by
error class, current queue depths (the broker, no database), AI decisions by score band
(``AiReview`` + ``moderation.policy`` bands), and the time from submission to the human decision
(``ModerationDecision`` against ``Post.submitted_at``; one bounded query, percentiles in Python).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import connection
from django.db.models import Case, CharField, Count, Q, Value, When
from django.db.models.functions import TruncHour
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from media.models import ProcessorRun, RunResult
from moderation import policy
from moderation.models import AiReview, ModerationAction, ModerationDecision

SAMPLE_LIMIT = 20_000  # rows read for percentiles where the database cannot compute them
HUMAN_DECISIONS = (ModerationAction.APPROVE, ModerationAction.REJECT, ModerationAction.QUARANTINE)
PALETTE = ("#417690", "#e08a2c", "#5b9f4a", "#b94a48", "#7d5ba6", "#888888")


@dataclass
class Chart:
    """One chart's data: ``categories`` along the x axis, ``series`` name -> one value per category."""

    title: str
    unit: str
    categories: list[str]
    series: dict[str, list[float]] = field(default_factory=dict)
    note: str = ""

    @property
    def empty(self) -> bool:
        return not any(v for values in self.series.values() for v in values)

    def svg(self) -> SafeString:
        return bar_chart_svg(self)


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (what PostgreSQL's percentile_cont computes)."""
    if not sorted_values:
        return 0.0
    pos = (len(sorted_values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def throughput(hours: int = 24) -> Chart:
    """Media processing runs finished per hour, by kind (processor), over the last ``hours``."""
    now = timezone.now()
    start = (now - timedelta(hours=hours - 1)).replace(minute=0, second=0, microsecond=0)
    rows = (
        ProcessorRun.objects.filter(started_at__gte=start)
        .exclude(result=RunResult.RUNNING)
        .annotate(hour=TruncHour("started_at"))
        .values("hour", "processor")
        .annotate(n=Count("id"))
        .order_by()
    )
    slots = [start + timedelta(hours=i) for i in range(hours)]
    index = {slot: i for i, slot in enumerate(slots)}
    series: dict[str, list[float]] = {}
    for row in rows:
        hour = row["hour"]
        if timezone.is_naive(hour):
            hour = timezone.make_aware(hour, timezone.get_current_timezone())
        i = index.get(hour.astimezone(start.tzinfo).replace(minute=0, second=0, microsecond=0))
        if i is not None:
            series.setdefault(row["processor"] or "?", [0] * hours)[i] += row["n"]
    labels = [timezone.localtime(s).strftime("%H") for s in slots]
    return Chart("Media processed per hour", "runs", labels, dict(sorted(series.items())))


def processing_times(days: int = 7) -> Chart:
    """p50 and p95 of successful runs' duration (seconds) by kind over the last ``days``."""
    since = timezone.now() - timedelta(days=days)
    by_kind: dict[str, tuple[float, float]] = {}
    if connection.vendor == "postgresql":
        table = ProcessorRun._meta.db_table
        with connection.cursor() as cur:
            cur.execute(
                f"SELECT processor, percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms), "  # noqa: S608
                f"percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) FROM {table} "
                "WHERE result = %s AND started_at >= %s AND duration_ms IS NOT NULL GROUP BY processor",
                [RunResult.SUCCEEDED, since],
            )
            by_kind = {kind: (p50 or 0.0, p95 or 0.0) for kind, p50, p95 in cur.fetchall()}
    else:
        values: dict[str, list[float]] = {}
        rows = (
            ProcessorRun.objects.filter(
                result=RunResult.SUCCEEDED, started_at__gte=since, duration_ms__isnull=False
            )
            .order_by("processor", "duration_ms")
            .values_list("processor", "duration_ms")[:SAMPLE_LIMIT]
        )
        for kind, ms in rows:
            values.setdefault(kind, []).append(ms)
        by_kind = {k: (_percentile(v, 0.5), _percentile(v, 0.95)) for k, v in values.items()}
    kinds = sorted(by_kind)
    return Chart(
        "Processing time by kind",
        "s",
        kinds,
        {
            "p50": [round(by_kind[k][0] / 1000, 2) for k in kinds],
            "p95": [round(by_kind[k][1] / 1000, 2) for k in kinds],
        },
    )


def failures(days: int = 7, top: int = 8) -> Chart:
    """Failed and retried runs by error class over the last ``days`` (the ``top`` most frequent)."""
    since = timezone.now() - timedelta(days=days)
    rows = list(
        ProcessorRun.objects.filter(started_at__gte=since, result__in=[RunResult.FAILED, RunResult.RETRYING])
        .values("error_class")
        .annotate(n=Count("id"))
        .order_by("-n", "error_class")[:top]
    )
    labels = [(r["error_class"] or "unknown").rsplit(".", 1)[-1] for r in rows]
    return Chart("Failures by error class", "runs", labels, {"failures": [r["n"] for r in rows]})


def queue_depths(broker=None) -> Chart:
    """Messages waiting on each declared queue (and its delay queue) right now: Redis list lengths
    for Dramatiq's RedisBroker (``<namespace>:<queue>``), the in-memory queues' sizes for the
    embedded broker. No database query."""
    import dramatiq

    broker = broker or dramatiq.get_broker()
    queues = sorted(q for q in broker.get_declared_queues() if not q.endswith((".DQ", ".XQ")))
    ready, delayed = [], []
    client = getattr(broker, "client", None)
    note = ""
    for q in queues:
        try:
            if client is not None:
                ns = getattr(broker, "namespace", "dramatiq")
                ready.append(int(client.llen(f"{ns}:{q}")))
                delayed.append(int(client.llen(f"{ns}:{q}.DQ")))
            else:
                in_memory = getattr(broker, "queues", {})
                ready.append(in_memory[q].qsize() if q in in_memory else 0)
                dq = f"{q}.DQ"
                delayed.append(in_memory[dq].qsize() if dq in in_memory else 0)
        except Exception as exc:  # the broker is down: say so instead of failing the page
            note = f"Could not read the broker: {exc}"
            ready.append(0)
            delayed.append(0)
    return Chart("Queue depth now", "messages", queues, {"waiting": ready, "delayed": delayed}, note)


def ai_bands(days: int = 7) -> Chart:
    """AI reviews by score band (``moderation.policy`` thresholds) over the last ``days``."""
    since = timezone.now() - timedelta(days=days)
    bands = [policy.Band.CLEAN, policy.Band.REVIEW, policy.Band.FLAG, policy.Band.NONE]
    band = Case(
        *(When(policy.band_q(b, field="overall_score"), then=Value(str(b))) for b in bands),
        default=Value(str(policy.Band.NONE)),
        output_field=CharField(),
    )
    rows = dict(
        AiReview.objects.filter(created_at__gte=since)
        .annotate(band=band)
        .values("band")
        .annotate(n=Count("id"))
        .order_by()
        .values_list("band", "n")
    )
    return Chart(
        "AI decisions by band",
        "reviews",
        [b.label for b in bands],
        {"reviews": [rows.get(str(b), 0) for b in bands]},
    )


def decision_latency(days: int = 30) -> Chart:
    """Hours from a post's submission to its human decision (approve, reject, quarantine by a
    moderator) over the last ``days``: p50, p95 and the maximum, from the latest ``SAMPLE_LIMIT``."""
    since = timezone.now() - timedelta(days=days)
    rows = (
        ModerationDecision.objects.filter(
            Q(created_at__gte=since),
            action__in=HUMAN_DECISIONS,
            moderator__isnull=False,
            post__submitted_at__isnull=False,
        )
        .order_by("-created_at")
        .values_list("created_at", "post__submitted_at")[:SAMPLE_LIMIT]
    )
    waits = sorted(max(0.0, (decided - submitted).total_seconds() / 3600) for decided, submitted in rows)
    return Chart(
        "Submission to human decision",
        "h",
        ["p50", "p95", "max"],
        {
            "hours": [
                round(_percentile(waits, 0.5), 2),
                round(_percentile(waits, 0.95), 2),
                round(max(waits, default=0), 2),
            ]
        },
        note=f"{len(waits)} decisions",
    )


def all_charts() -> list[Chart]:
    """Every chart of the dashboard, in page order (one query each; queue depths none)."""
    return [throughput(), processing_times(), failures(), queue_depths(), ai_bands(), decision_latency()]


# --- SVG ------------------------------------------------------------------------------------------------


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exp:
            return step * exp
    return 10 * exp


def _fmt(v: float) -> str:
    return f"{v:.0f}" if float(v).is_integer() or v >= 100 else f"{v:.2f}".rstrip("0").rstrip(".")


def bar_chart_svg(chart: Chart, *, width: int = 560, height: int = 240) -> SafeString:
    """A grouped vertical bar chart as inline SVG: one group per category, one bar per series, a
    y axis with 4 gridlines, a legend, and a ``<title>`` on every bar (its value) for hover."""
    left, right, top, bottom = 48, 10, 26, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    names = list(chart.series)
    peak = _nice_max(max((v for vs in chart.series.values() for v in vs), default=0))
    n = max(1, len(chart.categories))
    group_w = plot_w / n
    bar_w = max(1.0, group_w * 0.8 / max(1, len(names)))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="pf-chart" role="img" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" aria-label="{escape(chart.title)}">',
        f"<title>{escape(chart.title)}</title>",
    ]
    for i in range(5):
        y = top + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10" fill="#666">'
            f"{_fmt(peak * i / 4)}</text>"
        )
    for s, name in enumerate(names):
        colour = PALETTE[s % len(PALETTE)]
        for c, value in enumerate(chart.series[name]):
            h = plot_h * (value / peak) if peak else 0
            x = left + c * group_w + group_w * 0.1 + s * bar_w
            parts.append(
                f'<rect class="pf-bar" x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{escape(name)} {escape(chart.categories[c])}: '
                f"{_fmt(value)} {escape(chart.unit)}</title></rect>"
            )
        parts.append(
            f'<rect x="{left + s * 90}" y="6" width="10" height="10" fill="{colour}"/>'
            f'<text x="{left + s * 90 + 14}" y="15" font-size="11">{escape(name)}</text>'
        )
    every = max(1, math.ceil(n / 12))
    for c, label in enumerate(chart.categories):
        if c % every == 0:
            x = left + c * group_w + group_w / 2
            parts.append(
                f'<text x="{x:.1f}" y="{top + plot_h + 14}" text-anchor="middle" font-size="10">'
                f"{escape(label[:14])}</text>"
            )
    parts.append(
        f'<text x="{left}" y="{height - 6}" font-size="10" fill="#666">{escape(chart.unit)}'
        f"{' · no data yet' if chart.empty else ''}</text>"
    )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated string is escaped above
