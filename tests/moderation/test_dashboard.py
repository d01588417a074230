"""The pipeline dashboard: each chart's numbers from real rows, one query per chart, SVG on the page,
and only staff allowed to read the run logs may open it."""

from datetime import timedelta

import pytest
from django.utils import timezone

from media.models import ProcessorRun
from moderation import dashboard
from moderation.models import AiReview, ModerationDecision
from moderation.platform import get_platform_settings
from tests.factories import (
    AiReviewFactory,
    MediaFactory,
    ModerationDecisionFactory,
    PostFactory,
    ProcessorRunFactory,
    UserFactory,
)
from tests.moderation.test_admin import login, make_moderator

pytestmark = pytest.mark.django_db


def _runs():
    media = MediaFactory()
    for seconds in range(1, 101):  # image runs of 1..100 s
        ProcessorRunFactory(media=media, processor="image", duration_ms=seconds * 1000.0)
    for _ in range(3):
        ProcessorRunFactory(media=media, processor="video", duration_ms=20_000.0)
    ProcessorRunFactory(
        media=media, processor="video", result="failed", error_class="media.processors.base.ProcessingTimeout"
    )
    ProcessorRunFactory(media=media, processor="image", result="retrying", error_class="builtins.OSError")
    ProcessorRunFactory(media=media, processor="image", result="retrying", error_class="builtins.OSError")
    old = ProcessorRunFactory(media=media, processor="audio", duration_ms=5.0)
    ProcessorRun.objects.filter(pk=old.pk).update(started_at=timezone.now() - timedelta(days=30))


def test_charts_hold_the_rows_numbers():
    _runs()
    for score in (0.05, 0.1, 0.5, 0.9, 0.95, 0.99):
        AiReviewFactory(overall_score=score)
    AiReviewFactory(overall_score=None, decision="error")
    now = timezone.now()
    for hours in (1, 2, 3, 10):
        post = PostFactory(status="published", submitted_at=now - timedelta(hours=hours))
        ModerationDecisionFactory(post=post, action="approve")
    ModerationDecisionFactory(post=PostFactory(submitted_at=now), action="claim")  # not a decision

    throughput = dashboard.throughput()
    assert sum(throughput.series["image"]) == 102 and sum(throughput.series["video"]) == 4
    assert "audio" not in throughput.series  # 30 days old
    times = dashboard.processing_times()
    assert times.categories == ["image", "video"]
    assert times.series["p50"] == [50.5, 20.0] and times.series["p95"] == [95.05, 20.0]
    failures = dict(
        zip(dashboard.failures().categories, dashboard.failures().series["failures"], strict=True)
    )
    assert failures == {"OSError": 2, "ProcessingTimeout": 1}
    bands = dashboard.ai_bands()
    assert dict(zip(bands.categories, bands.series["reviews"], strict=True)) == {
        "Clean": 2,
        "Review": 1,
        "Flag": 3,
        "No score": 1,
    }
    latency = dashboard.decision_latency()
    assert latency.series["hours"][0] == pytest.approx(2.5, abs=0.01)  # median of 1, 2, 3, 10 h
    assert latency.series["hours"][2] == pytest.approx(10, abs=0.01) and latency.note == "4 decisions"


def test_queue_depths_read_the_broker(broker):
    import media.tasks  # noqa: F401 - declares the media queues

    broker.get_actor("process_image_media").send("00000000-0000-0000-0000-000000000001")
    broker.get_actor("process_image_media").send_with_options(args=("x",), delay=60_000)
    chart = dashboard.queue_depths(broker)
    depth = dict(zip(chart.categories, chart.series["waiting"], strict=True))
    delayed = dict(zip(chart.categories, chart.series["delayed"], strict=True))
    assert depth["media.image"] == 1 and delayed["media.image"] == 1 and depth["media.video"] == 0


def test_one_query_per_chart_however_many_rows(django_assert_num_queries):
    _runs()
    for _ in range(20):
        AiReviewFactory()
        ModerationDecisionFactory(post=PostFactory(submitted_at=timezone.now() - timedelta(hours=1)))
    get_platform_settings()  # cached: the band thresholds cost no query per chart
    with django_assert_num_queries(5):  # throughput, times, failures, bands, decisions; queues: none
        charts = dashboard.all_charts()
    assert len(charts) == 6 and all(c.svg().startswith("<svg") for c in charts)
    assert AiReview.objects.count() == 20 and ModerationDecision.objects.count() == 20


def test_dashboard_page_draws_svg_charts_for_moderators_only(client):
    _runs()
    moderator = make_moderator()
    r = login(moderator).get("/admin/pipeline/")
    assert r.status_code == 200
    html = r.content.decode()
    assert (
        html.count('class="pf-chart"') == 6 and 'class="pf-bar"' in html and "Failures by error class" in html
    )
    assert "cdn" not in html.lower() and '<script src="http' not in html
    queue = login(moderator).get("/admin/moderation/reviewqueue/")
    assert "/admin/pipeline/" in queue.content.decode()
    assert login(UserFactory(is_staff=True)).get("/admin/pipeline/").status_code == 403
    assert client.get("/admin/pipeline/").status_code == 302  # to the login page
    assert login(UserFactory(is_staff=True, is_superuser=True)).get("/admin/pipeline/").status_code == 200


def test_chart_labels_are_escaped():
    chart = dashboard.Chart("<b>x</b>", "s", ["<script>"], {"a&b": [1]})
    svg = chart.svg()
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "a&amp;b" in svg
