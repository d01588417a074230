"""sweep_pending_media: selection, dry run, stuck rows, skipped kinds, the lock."""

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection  # noqa: F401 - used by skipif
from django.utils import timezone

from media.locks import LockHeld, exclusive
from media.models import Media
from media.sweep import sweep_candidates
from tests.conftest import queued
from tests.factories import MediaFactory

pytestmark = pytest.mark.django_db


def _age(media, minutes):
    Media.objects.filter(pk=media.pk).update(updated_at=timezone.now() - timedelta(minutes=minutes))


def _sweep(*args):
    out = io.StringIO()
    call_command("sweep_pending_media", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def rows(db):
    pending = MediaFactory(processing_status="pending")
    failed = MediaFactory(processing_status="failed", attempts=1)
    exhausted = MediaFactory(processing_status="failed", attempts=3)
    stuck = MediaFactory(processing_status="processing", attempts=1)
    busy = MediaFactory(processing_status="processing", attempts=1)
    ready = MediaFactory(processing_status="ready")
    thumb = MediaFactory(processing_status="pending", kind="thumbnail")
    fresh = MediaFactory(processing_status="pending")
    for m in (pending, failed, exhausted, ready, thumb):
        _age(m, 10)
    _age(stuck, 45)
    _age(busy, 5)
    return dict(
        pending=pending,
        failed=failed,
        exhausted=exhausted,
        stuck=stuck,
        busy=busy,
        ready=ready,
        thumb=thumb,
        fresh=fresh,
    )


def test_dry_run_prints_and_changes_nothing(rows, broker, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        out = _sweep("--dry-run")
    for name in ("pending", "failed", "stuck"):
        assert str(rows[name].pk) in out
    for name in ("exhausted", "busy", "ready", "fresh"):
        assert str(rows[name].pk) not in out
    assert "skipped 1 thumbnail media: no processor" in out and "would queue 3" in out
    assert queued(broker, "media.image") == []
    assert Media.objects.get(pk=rows["failed"].pk).processing_status == "failed"


def test_sweep_requeues_pending_failed_and_stuck(rows, broker, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        out = _sweep()
    assert "3 matched, queued 3" in out
    sent = sorted(m.args[0] for m in queued(broker, "media.image"))
    assert sent == sorted(str(rows[n].pk) for n in ("pending", "failed", "stuck"))
    assert Media.objects.get(pk=rows["stuck"].pk).processing_status == "pending"
    assert Media.objects.get(pk=rows["exhausted"].pk).processing_status == "failed"


def test_filters_limit_and_exhausted(rows, broker, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        out = _sweep("--statuses", "failed", "--stuck-minutes", "-1", "--include-exhausted")
    assert str(rows["exhausted"].pk) in out and str(rows["pending"].pk) not in out
    assert Media.objects.get(pk=rows["exhausted"].pk).attempts == 0
    with django_capture_on_commit_callbacks(execute=True):
        out = _sweep("--limit", "1", "--kinds", "image")
    assert "1 matched" in out


def test_bad_arguments_are_clear(rows):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="pending and/or failed"):
        _sweep("--statuses", "ready")
    with pytest.raises(CommandError, match="Unknown kind"):
        _sweep("--kinds", "hologram")


def test_second_sweep_exits_while_lock_held(rows, broker):
    err = io.StringIO()
    with exclusive("sweep_pending_media"), pytest.raises(SystemExit) as exit_:
        call_command("sweep_pending_media", stdout=io.StringIO(), stderr=err)
    assert exit_.value.code == 3 and "Another sweep is running" in err.getvalue()
    assert queued(broker, "media.image") == []


def test_expired_database_lock_is_taken_over(db):
    from media.models import JobLock

    JobLock.objects.create(
        name="x",
        holder="dead:1",
        acquired_at=timezone.now() - timedelta(hours=2),
        expires_at=timezone.now() - timedelta(hours=1),
    )
    with exclusive("x") as holder:
        assert JobLock.objects.get(name="x").holder == holder
        with pytest.raises(LockHeld), exclusive("x"):
            pass
    assert not JobLock.objects.filter(name="x").exists()


def test_scheduled_sweep_runs_only_when_enabled(rows, broker, platform, django_capture_on_commit_callbacks):
    from apscheduler.triggers.cron import CronTrigger

    from media.management.commands.run_scheduler import run_sweep

    platform(media_sweep_schedule_enabled=False)
    with django_capture_on_commit_callbacks(execute=True):
        run_sweep()
    assert queued(broker, "media.image") == []
    platform(media_sweep_schedule_enabled=True)
    with django_capture_on_commit_callbacks(execute=True):
        run_sweep()
    assert len(queued(broker, "media.image")) == 3
    assert CronTrigger.from_crontab("*/15 * * * *")  # the default MEDIA_SWEEP_CRON parses


@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="plans are checked on PostgreSQL")
def test_sweep_query_can_use_its_partial_index(rows):
    """The sweep reads only unfinished rows through media_sweep_idx, whatever the table size."""

    qs = sweep_candidates(
        statuses=["pending", "failed"],
        stuck_minutes=30,
        kinds=None,
        include_exhausted=False,
        pending_grace_minutes=5,
    )
    sql, params = qs.query.sql_with_params()
    with connection.cursor() as cur:
        cur.execute("SET LOCAL enable_seqscan = off")
        cur.execute("EXPLAIN " + sql, params)
        plan = "\n".join(r[0] for r in cur.fetchall())
    assert "media_sweep_idx" in plan, plan


def test_stuck_minutes_zero_spares_a_job_that_heartbeats(db, broker, django_capture_on_commit_callbacks):
    """Issue 9 row 10: ``--stuck-minutes 0`` re-queued healthy jobs. A processing row whose attempt
    heart-beat recently is alive however old the row is; one whose heartbeat went stale is stuck."""
    now = timezone.now()
    alive = MediaFactory(processing_status="processing", attempts=1)
    dead = MediaFactory(processing_status="processing", attempts=1)
    Media.objects.filter(pk=alive.pk).update(
        updated_at=now - timedelta(minutes=10), heartbeat_at=now - timedelta(seconds=5)
    )
    Media.objects.filter(pk=dead.pk).update(
        updated_at=now - timedelta(minutes=10), heartbeat_at=now - timedelta(minutes=5)
    )
    with django_capture_on_commit_callbacks(execute=True):
        out = _sweep("--stuck-minutes", "0", "--statuses", "pending")
    assert str(dead.pk) in out and str(alive.pk) not in out
    assert [m.args[0] for m in queued(broker, "media.image")] == [str(dead.pk)]
    assert Media.objects.get(pk=alive.pk).processing_status == "processing"
    assert Media.objects.get(pk=dead.pk).processing_status == "pending"


def test_a_fresh_claim_is_not_stuck_even_at_zero_minutes(db, broker, settings):
    settings.MEDIA_HEARTBEAT_STALE_SECONDS = 60
    just_claimed = MediaFactory(processing_status="processing", attempts=1)
    Media.objects.filter(pk=just_claimed.pk).update(
        updated_at=timezone.now() - timedelta(seconds=20), heartbeat_at=timezone.now() - timedelta(seconds=20)
    )

    def stuck():
        return list(
            sweep_candidates(
                statuses=["pending"],
                stuck_minutes=0,
                kinds=None,
                include_exhausted=False,
                pending_grace_minutes=5,
            ).values_list("pk", flat=True)
        )

    assert stuck() == []
    settings.MEDIA_HEARTBEAT_STALE_SECONDS = 10
    assert stuck() == [just_claimed.pk]


def test_permanent_failures_are_not_swept(db):
    bomb = MediaFactory(processing_status="failed", attempts=1, failed_permanently=True)
    flaky = MediaFactory(processing_status="failed", attempts=1)
    ids = set(
        sweep_candidates(
            statuses=["failed"],
            stuck_minutes=-1,
            kinds=None,
            include_exhausted=False,
            pending_grace_minutes=5,
        ).values_list("pk", flat=True)
    )
    assert ids == {flaky.pk}
    assert bomb.pk in set(
        sweep_candidates(
            statuses=["failed"], stuck_minutes=-1, kinds=None, include_exhausted=True, pending_grace_minutes=5
        ).values_list("pk", flat=True)
    )


def test_embedded_start_recovers_lost_work(broker, django_capture_on_commit_callbacks):
    from media.management.commands.runserver import recover_embedded_work

    lost = MediaFactory(processing_status="processing")
    Media.objects.filter(pk=lost.pk).update(updated_at=timezone.now() - timedelta(seconds=5))
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        recover_embedded_work(out)
    assert "1 media re-queued" in out.getvalue()
    assert [m.args[0] for m in queued(broker, "media.image")] == [str(lost.pk)]
