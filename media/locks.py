"""One named lock that works across processes and machines: Redis when configured, else a row in
the database (``JobLock``). Used so two sweeps never run at once."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from media.models import JobLock


class LockHeld(Exception):
    def __init__(self, name: str, holder: str):
        super().__init__(f"{name} is already running ({holder}).")
        self.holder = holder


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@contextmanager
def exclusive(name: str, *, ttl_seconds: int = 3600) -> Iterator[str]:
    holder = _holder()
    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        lock = client.lock(f"postflow:lock:{name}", timeout=ttl_seconds, blocking=False)
        if not lock.acquire(blocking=False, token=holder):
            current = client.get(f"postflow:lock:{name}")
            raise LockHeld(name, current.decode() if current else "another process")
        try:
            yield holder
        finally:
            with contextlib.suppress(redis.exceptions.LockError):
                lock.release()
        return
    _db_acquire(name, holder, ttl_seconds)
    try:
        yield holder
    finally:
        JobLock.objects.filter(name=name, holder=holder).delete()


def _db_acquire(name: str, holder: str, ttl_seconds: int) -> None:
    now = timezone.now()
    expires = now + timedelta(seconds=ttl_seconds)
    try:
        with transaction.atomic():
            JobLock.objects.create(name=name, holder=holder, acquired_at=now, expires_at=expires)
            return
    except IntegrityError:
        pass
    # Held: take it over only if it expired (its holder crashed). One UPDATE decides the race.
    taken = JobLock.objects.filter(name=name, expires_at__lt=now).update(
        holder=holder, acquired_at=now, expires_at=expires
    )
    if not taken:
        current = JobLock.objects.filter(name=name).values_list("holder", flat=True).first()
        raise LockHeld(name, current or "another process")
