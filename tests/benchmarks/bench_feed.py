"""Benchmark: the public feed with revisions (issue 13). Revisions must not cost the public read
path: the feed of 20 posts that each have 5 revisions, read through the API, against today's feed
(the same request with the pre-revision media prefetch, over the same posts without revisions),
both measured in this run. Figures: query-count and median-time ratios (target ≤ 1.1).

Runs in a throw-away test database (never the development one). Standalone:
``python tests/benchmarks/bench_feed.py``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
POSTS = 20
REVISIONS = 5
ROUNDS = 15

Report = Callable[[str, float, str], None]


def _setup_django() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()


def _make_posts(prefix: str, *, revisions: int) -> None:
    from django.contrib.auth import get_user_model

    from content import services
    from content.models import PostStatus
    from media.models import Media, ProcessingStatus

    author = get_user_model().objects.create_user(username=f"{prefix}-author", password="x")
    for i in range(POSTS):
        post = services.post_create(author=author, type="image", title=f"{prefix} {i}", body="Body " * 40)
        for n in range(2):
            m = Media.objects.create(
                post=post,
                owner=author,
                kind="image",
                position=n,
                processing_status=ProcessingStatus.READY,
                original_key=f"media/{author.pk}/{prefix}{i}{n}/original.jpg",
                mime_type="image/jpeg",
                sha256="0" * 64,
                variants={
                    name: {"key": f"media/{author.pk}/{prefix}{i}{n}/{name}.jpg", "mime_type": "image/jpeg"}
                    for name in ("thumb", "small", "medium", "large")
                },
            )
            assert m.pk
        if revisions:
            services.post_publish(post_id=post.pk, actor=author)  # reactive_only: revision 1, public
            for r in range(revisions - 1):
                services.post_edit(post_id=post.pk, actor=author, changes={"body": f"Edit {r} " * 40})
        else:  # today's posts: published, no revision rows
            type(post).objects.filter(pk=post.pk).update(
                status=PostStatus.PUBLISHED, published_at=post.created_at
            )


def _measure(client, author: str) -> tuple[int, float]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        started = time.perf_counter()
        r = client.get("/api/v1/content/posts", {"author": author, "page_size": POSTS})
        elapsed = time.perf_counter() - started
    assert r.status_code == 200 and len(r.json()["results"]) == POSTS, r.content[:300]
    return len(ctx.captured_queries), elapsed


def run(report: Report) -> None:
    _setup_django()
    from django.db import connection
    from django.db.models import BooleanField, Value
    from django.test.utils import setup_test_environment, teardown_test_environment
    from rest_framework.test import APIClient

    from content import selectors
    from media.models import Media
    from moderation.models import PlatformSettings
    from moderation.platform import invalidate_platform_settings

    setup_test_environment()
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        PlatformSettings.objects.update_or_create(pk=1, defaults={"moderation_mode": "reactive_only"})
        invalidate_platform_settings()
        _make_posts("today", revisions=0)
        _make_posts("revised", revisions=REVISIONS)
        client = APIClient()
        new_prefetch = selectors.public_media

        def today() -> tuple[int, float]:
            # The feed before revisions: attached media, no revision filter (the constant only tells
            # the serializer the rows need no per-medium check, as nothing was checked then).
            selectors.public_media = lambda: Media.objects.attached().annotate(
                in_public_revision=Value(True, output_field=BooleanField())
            )
            try:
                return _measure(client, "today-author")
            finally:
                selectors.public_media = new_prefetch

        def revised() -> tuple[int, float]:
            return _measure(client, "revised-author")

        for _ in range(3):  # warm caches on both paths
            today(), revised()
        base_times, new_times = [], []
        for _ in range(ROUNDS):  # interleaved, so load on the machine hits both alike
            base_q, t = today()
            base_times.append(t)
            new_q, t = revised()
            new_times.append(t)
        base_ms, new_ms = statistics.median(base_times) * 1000, statistics.median(new_times) * 1000
        report("feed_today_queries", base_q, "queries")
        report("feed_revisions_queries", new_q, "queries")
        report("feed_revisions_query_ratio", round(new_q / base_q, 3), "x")
        report("feed_today_ms", round(base_ms, 2), "ms")
        report("feed_revisions_ms", round(new_ms, 2), "ms")
        report("feed_revisions_time_ratio", round(new_ms / base_ms, 3), "x")
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
        teardown_test_environment()


if __name__ == "__main__":
    run(lambda name, value, unit: print(f"BENCH {name} {value} {unit}", flush=True))
