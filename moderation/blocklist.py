"""The perceptual-hash side of the blocklist: every ``BlockedMedia.pdq_hashes`` in one packed numpy
index (media/processors/pdq.py's ``PdqIndex``), cached per process.

The cache is checked against a signature of the table (row count, highest id, latest
``updated_at``: one indexed aggregate query) before each lookup, so a hash blocked in the web
process is seen by every worker at its next lookup; saves and deletes through the ORM also drop this
process's copy at once (signals). Building the index reads every row once (1,000,000 hashes: a few
seconds); a lookup is one numpy scan (``make bench``: bench_pdq.py).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count, Max
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from media.processors.pdq import PdqIndex, is_crop
from moderation.models import BlockedMedia

_lock = threading.Lock()
_cached: tuple[tuple, PdqIndex] | None = None


@dataclass(frozen=True)
class PdqBlockMatch:
    """A medium's hash (``hash``, from picture ``source``) within ``distance`` of ``blocked_id``'s."""

    blocked_id: int
    hash: str
    source: str
    distance: int

    def as_dict(self) -> dict:
        return {
            "blocked_id": self.blocked_id,
            "hash": self.hash,
            "source": self.source,
            "distance": self.distance,
        }


def _signature() -> tuple:
    agg = BlockedMedia.objects.aggregate(n=Count("id"), last_id=Max("id"), changed=Max("updated_at"))
    return (agg["n"], agg["last_id"], agg["changed"])


def index() -> PdqIndex:
    """This process's index of every blocked PDQ hash (keys: BlockedMedia ids), rebuilt when the
    table changed since it was built."""
    global _cached
    signature = _signature()
    cached = _cached
    if cached is not None and cached[0] == signature:
        return cached[1]
    with _lock:
        hexes, keys = [], []
        for pk, hashes in (
            BlockedMedia.objects.exclude(pdq_hashes=[])
            .values_list("id", "pdq_hashes")
            .iterator(chunk_size=5000)
        ):
            for h in hashes or ():
                hexes.append(h)
                keys.append(pk)
        built = PdqIndex(hexes, keys)
        _cached = (signature, built)
        return built


def invalidate() -> None:
    """Drop this process's index (the next lookup rebuilds it)."""
    global _cached
    _cached = None


@receiver(post_save, sender=BlockedMedia)
@receiver(post_delete, sender=BlockedMedia)
def _blocklist_changed(**kwargs) -> None:
    invalidate()


def matchable(pdq_hashes: list[dict], *, crops: bool = True) -> list[dict]:
    """The entries of a ``Media.pdq_hashes`` list good enough to match or to block (quality at least
    ``PDQ_MIN_QUALITY``; flat pictures' bits are noise and would match each other). Without
    ``crops``, only the pictures' own hashes (what a new medium is looked up by); the crops'
    hashes (``pdq.CROPS``) are stored with a block so lightly cropped copies are caught."""
    return [
        h
        for h in pdq_hashes or ()
        if h.get("hash")
        and int(h.get("quality", 0)) >= settings.PDQ_MIN_QUALITY
        and (crops or not is_crop(h.get("source", "")))
    ]


def match(pdq_hashes: list[dict]) -> PdqBlockMatch | None:
    """The first of a medium's hashes (``[{hash, quality, source}]``) within ``PDQ_MATCH_DISTANCE``
    of a blocked hash, or None."""
    candidates = matchable(pdq_hashes, crops=False)
    if not candidates:
        return None
    idx = index()
    if not len(idx):
        return None
    for entry in candidates:
        found = idx.nearest(entry["hash"], settings.PDQ_MATCH_DISTANCE)
        if found is not None:
            return PdqBlockMatch(
                blocked_id=int(found.key),
                hash=entry["hash"],
                source=entry.get("source", ""),
                distance=found.distance,
            )
    return None
