"""Row locks: the one way Postflow takes them (``lock_rows``), and the one retry for a lost lock race.

PostgreSQL's ``SELECT … FOR UPDATE`` also blocks every ``FOR KEY SHARE`` lock on the row, and that is
the lock PostgreSQL takes on a referenced row whenever a row pointing at it is inserted or its foreign
key changes (https://www.postgresql.org/docs/current/explicit-locking.html#LOCKING-ROWS; Django creates
foreign keys ``DEFERRABLE INITIALLY DEFERRED``, so the check runs at COMMIT). A worker holding its
owner's row ``FOR UPDATE`` (the fairness slot) while another transaction inserts a notification for
that owner, and holds the post ``FOR UPDATE`` in the opposite order, deadlocks (issue 17's failed
transcript on PostgreSQL). We never change primary keys, so every lock we take is ``FOR NO KEY
UPDATE``: it excludes every other locker and writer of the row exactly like ``FOR UPDATE``, and lets
rows that merely reference it be written. SQLite has no row locks (its writers are serialised by the
database lock), so there the lock is a no-op, as Django's ``select_for_update`` is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import OperationalError, connections
from django.db.models import Model, QuerySet

logger = logging.getLogger("postflow.db")

M = TypeVar("M", bound=Model)
T = TypeVar("T")

# SQLSTATEs of a lost lock race that a fresh transaction may win: deadlock_detected and
# serialization_failure (https://www.postgresql.org/docs/current/errcodes-appendix.html).
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


def lock_rows(qs: QuerySet[M], *, of: tuple[str, ...] = (), skip_locked: bool = False) -> QuerySet[M]:
    """``qs`` locked ``FOR NO KEY UPDATE`` (``OF`` the given relations, ``SKIP LOCKED`` when asked) on
    PostgreSQL; plain ``select_for_update`` elsewhere. Evaluate it inside ``transaction.atomic()``:
    outside one Django raises ``TransactionManagementError``."""
    locked = qs.select_for_update(of=of, skip_locked=skip_locked)
    if connections[locked.db].features.has_select_for_no_key_update:
        locked = qs.select_for_update(of=of, skip_locked=skip_locked, no_key=True)
    return locked


def is_lock_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is a deadlock or serialization failure (PostgreSQL) or SQLite's "database is
    locked": the transaction was rolled back and running it again may succeed."""
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__
    if getattr(cause, "sqlstate", None) in RETRYABLE_SQLSTATES:
        return True
    return "database is locked" in str(exc)


def retry_lock_conflicts(fn: Callable[[], T], *, attempts: int = 3, what: str = "") -> T:
    """Call ``fn`` (which must open its own transaction and be safe to run again) up to ``attempts``
    times while it loses a lock race (``is_lock_conflict``), waiting 50 ms, 100 ms … between tries.
    Any other error, or the last conflict, is raised."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except OperationalError as exc:
            if attempt == attempts or not is_lock_conflict(exc):
                raise
            logger.warning("%s lost a lock race (%s); trying again", what or fn, exc.__class__.__name__)
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")
