"""Row locks (``config.locking``): every lock is ``FOR NO KEY UPDATE`` on PostgreSQL, so holding a post
or a user row never blocks writing rows that merely point at it, and a lost lock race is retried."""

from __future__ import annotations

import threading

import pytest
from django.db import DatabaseError, OperationalError, connection, transaction

from config.locking import is_lock_conflict, lock_rows, retry_lock_conflicts
from content.locks import post_lock
from content.models import Notification, Post
from media.models import Media
from tests.factories import PostFactory

pg_only = pytest.mark.skipif(connection.vendor == "sqlite", reason="row locks need PostgreSQL")


class _Holder:
    """Hold locks in another connection until released."""

    def __init__(self, take):
        self.take, self.locked, self.release = take, threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self):
        try:
            with transaction.atomic():
                self.take()
                self.locked.set()
                self.release.wait(15)
        finally:
            connection.close()

    def __enter__(self):
        self.thread.start()
        assert self.locked.wait(10)
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.thread.join()


@pg_only
@pytest.mark.django_db(transaction=True)
def test_locked_post_and_owner_rows_still_take_rows_that_point_at_them():
    """The deadlock issue 17 found: a worker held the owner's row (fairness slot) and the post was
    held elsewhere while each side inserted rows referencing the other's row. With NO KEY locks the
    inserts (foreign-key checks take FOR KEY SHARE at COMMIT) never wait."""
    post = PostFactory(status="processing")
    author = post.author
    users = type(author).objects

    def take():
        post_lock(post_id=post.pk)
        list(lock_rows(users.filter(pk=author.pk)).values_list("pk"))

    with _Holder(take):
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '3s'")
            Notification.objects.create(user=author, type="post_published", post=post)
            Media.objects.create(post=post, owner=author, kind="image", original_key="k")
        # ... and the locks still exclude every other locker and writer of the rows themselves.
        with pytest.raises(DatabaseError), transaction.atomic():
            Post.objects.select_for_update(nowait=True, no_key=True).get(pk=post.pk)
        with pytest.raises(DatabaseError), transaction.atomic():
            users.select_for_update(nowait=True, no_key=True).get(pk=author.pk)
    assert Notification.objects.filter(post=post).count() == 1
    assert Media.objects.filter(post=post).count() == 1


def test_lock_rows_asks_for_no_key_locks_where_the_database_has_them():
    query = lock_rows(Post.objects.all(), of=("self",), skip_locked=True).query
    assert query.select_for_update and query.select_for_update_of == ("self",)
    assert query.select_for_update_skip_locked
    assert query.select_for_no_key_update == connection.features.has_select_for_no_key_update


class _Cause(Exception):
    def __init__(self, sqlstate):
        self.sqlstate = sqlstate


def _conflict(sqlstate="40P01"):
    exc = OperationalError("deadlock detected")
    exc.__cause__ = _Cause(sqlstate)
    return exc


def test_lost_lock_races_are_tried_again_and_others_are_not():
    assert is_lock_conflict(_conflict("40P01")) and is_lock_conflict(_conflict("40001"))
    assert is_lock_conflict(OperationalError("database is locked"))
    assert not is_lock_conflict(_conflict("57014")) and not is_lock_conflict(ValueError("x"))

    tries = []

    def twice_then_ok():
        tries.append(1)
        if len(tries) < 3:
            raise _conflict()
        return "settled"

    assert retry_lock_conflicts(twice_then_ok) == "settled" and len(tries) == 3

    tries.clear()
    with pytest.raises(OperationalError):
        retry_lock_conflicts(lambda: tries.append(1) or (_ for _ in ()).throw(_conflict()), attempts=2)
    assert len(tries) == 2

    tries.clear()
    with pytest.raises(OperationalError, match="timeout"):
        retry_lock_conflicts(lambda: tries.append(1) or (_ for _ in ()).throw(_conflict_other()))
    assert len(tries) == 1


def _conflict_other():
    exc = OperationalError("canceling statement due to lock timeout")
    exc.__cause__ = _Cause("55P03")
    return exc
