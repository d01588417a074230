"""The one seam over django-storages (DESIGN.md §2). Code above it never knows which backend runs.

Keys: ``uploads/{user}/{upload_id}`` for staged uploads, ``media/{user}/{media_id}/{name}.{ext}`` for
a medium's original and variants, and ``media/{user}/{media_id}/{generation}/{name}.{ext}`` once its
keys were rotated (``rotated_key``). This module is the only place that spells that layout. Clients
never see or build keys: they get URLs.

The backend is chosen once per configured storage (as Zulip's ``zerver/lib/upload/{local,s3}.py``):
``LocalBackend`` over Django's ``FileSystemStorage``, ``S3Backend`` over django-storages'
``S3Storage``. Both are used only through their public API (``save``, ``open``, ``exists``,
``delete``, ``size``, ``url(name, parameters=…, expire=…)``, and S3Storage's ``bucket`` and
``connection`` for what Django's Storage API has no verb for: ranged reads, server-side copies,
prefix listings and presigned POSTs).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import hashlib
import math
import mimetypes
import os
import posixpath
import re
import secrets
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from django.conf import settings
from django.core import signing
from django.core.files import File
from django.core.files.storage import Storage, storages
from django.urls import reverse

_URL_SALT = "postflow.media-url"
_PREFIX_SALT = "postflow.media-prefix-url"
_UPLOAD_SALT = "postflow.upload-url"
_PART_SALT = "postflow.upload-part-url"
CHUNK = 1024 * 1024
RANGE_CHUNK = 64 * 1024  # what a ranged response reads per step: small, so a 64 KiB range is one read


# --- keys ------------------------------------------------------------------------------------------

_KEY_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")


class InvalidKey(ValueError):
    """A storage key that is not in canonical form (traversal, empty segments, odd characters)."""


def clean_key(key: Any) -> str:
    """``key`` itself when it is a canonical storage key, else ``InvalidKey``.

    Canonical: relative, ``/``-separated, no empty, ``.`` or ``..`` segments, no backslash, no percent
    sign (so no percent-encoded traversal either), and only ``[A-Za-z0-9._-]`` in each segment — every
    key this module makes has that form. Comparing keys is only meaningful between canonical ones:
    ``media/1/x/../../2/y/original.jpg`` starts with ``media/1/x/`` but names another user's file.
    """
    if not isinstance(key, str) or not key or len(key) > 500:
        raise InvalidKey("empty or too long")
    if posixpath.normpath(key) != key or key.startswith("/"):
        raise InvalidKey(f"not a normalised relative path: {key!r}")
    for segment in key.split("/"):
        if segment in ("", ".", "..") or not _KEY_SEGMENT.match(segment):
            raise InvalidKey(f"bad segment {segment!r} in {key!r}")
    return key


def upload_key(user_id: int, upload_id: Any) -> str:
    return f"uploads/{user_id}/{upload_id}"


def upload_part_key(upload_key_: str, part_number: int) -> str:
    """Where the local backend keeps part ``part_number`` of a resumable upload (``…-parts/00001``)."""
    return f"{upload_key_}-parts/{part_number:05d}"


def media_prefix(user_id: int, media_id: Any) -> str:
    """The folder holding every object of one medium, whatever its key generation."""
    return f"media/{user_id}/{media_id}/"


def media_key(user_id: int, media_id: Any, name: str, ext: str) -> str:
    return f"{media_prefix(user_id, media_id)}{name}.{ext.lstrip('.')}"


def key_belongs_to(key: Any, *, user_id: int, media_id: Any) -> bool:
    """True when ``key`` is canonical and inside the medium's folder (see ``clean_key``)."""
    try:
        return clean_key(key).startswith(media_prefix(user_id, media_id))
    except InvalidKey:
        return False


def rotated_key(key: str, *, user_id: int, media_id: Any) -> str:
    """A new, unguessable key for the same object of a medium: ``media/{u}/{m}/{random}/{file}``.

    URLs signed for the old key stop working once the old object is deleted (DESIGN.md §4: no URL
    issued while a post was public works after it is hidden)."""
    if not key_belongs_to(key, user_id=user_id, media_id=media_id):
        raise InvalidKey(f"{key!r} is not a key of media {media_id}")
    return f"{media_prefix(user_id, media_id)}{secrets.token_hex(12)}/{posixpath.basename(key)}"


def rotated_tree(folder: str, *, user_id: int, media_id: Any) -> str:
    """A new, unguessable folder for a tree of a medium (an HLS folder ``…/hls``): the same last
    segment under a random generation, so relative URIs inside the tree keep working."""
    folder = folder.rstrip("/")
    if not key_belongs_to(folder, user_id=user_id, media_id=media_id):
        raise InvalidKey(f"{folder!r} is not a folder of media {media_id}")
    return f"{media_prefix(user_id, media_id)}{secrets.token_hex(12)}/{posixpath.basename(folder)}"


def live_folder(user_id: int, stream_id: Any) -> str:
    """A new, unguessable folder for the live HLS tree of a stream: ``live/{u}/{stream}/{random}/hls``.
    A new one is made when the stream's post is hidden, so grants issued before stop working."""
    return f"{live_prefix(user_id, stream_id)}{secrets.token_hex(12)}/hls"


def live_prefix(user_id: int, stream_id: Any) -> str:
    """The folder holding every object of one stream's live trees (all generations)."""
    return f"live/{user_id}/{stream_id}/"


def extension_for(mime_type: str) -> str:
    special = {
        "image/jpeg": "jpg",
        "audio/mpeg": "mp3",
        "audio/mp4": "m4a",
        "video/quicktime": "mov",
        "audio/x-wav": "wav",
        "audio/wav": "wav",
        "image/heic": "heic",
        "image/avif": "avif",
        "video/x-matroska": "mkv",
        "video/x-msvideo": "avi",
        "audio/ogg": "ogg",
        "audio/flac": "flac",
        # Containers the sniffer knows (media/sniff.py) that mimetypes may not.
        "video/mpeg": "mpg",
        "video/mp2t": "ts",
        "video/3gpp": "3gp",
        "video/3gpp2": "3g2",
        "video/x-flv": "flv",
        "video/x-ms-asf": "asf",
        "video/webm": "webm",
        "audio/webm": "webm",
        "audio/x-matroska": "mka",
        "audio/3gpp": "3gp",
        "audio/3gpp2": "3g2",
        "audio/aiff": "aiff",
        "audio/x-caf": "caf",
        "audio/x-w64": "w64",
        "audio/x-wavpack": "wv",
        "audio/amr": "amr",
        "audio/x-ms-wma": "wma",
        "audio/mp2t": "ts",
        "audio/x-mpeg-ps": "mpg",
        "audio/x-flv": "flv",
        "audio/x-msvideo": "avi",
        "audio/aac": "aac",
    }
    if mime_type in special:
        return special[mime_type]
    guess = mimetypes.guess_extension(mime_type or "") or ".bin"
    return guess.lstrip(".")


@dataclass(frozen=True)
class ObjectInfo:
    """What a conditional response needs about a stored object: its size in bytes and when it was
    last written (timezone-aware UTC)."""

    size: int
    modified: dt.datetime


# --- signing S3 URLs at a fixed time ------------------------------------------------------------------
# botocore's SigV4 signers stamp the request with ``botocore.auth.get_current_datetime()`` (see
# botocore/auth.py ``SigV4Auth.add_auth``); there is no parameter for it. To sign a presigned GET at the
# start of its window (so that every read in the window gets the same URL) that one function is
# wrapped, once, by one that answers a per-context fixed time when ``_signing_clock`` set one, and
# the real clock otherwise: other threads and other signatures are untouched.

_fixed_signing_time: contextvars.ContextVar[dt.datetime | None] = contextvars.ContextVar(
    "postflow_fixed_signing_time", default=None
)
_clock_installed = False


def _install_signing_clock() -> None:
    global _clock_installed
    if _clock_installed:
        return
    import botocore.auth

    real = botocore.auth.get_current_datetime

    def get_current_datetime(remove_tzinfo: bool = True) -> dt.datetime:
        fixed = _fixed_signing_time.get()
        if fixed is None:
            return real(remove_tzinfo)
        fixed = fixed.astimezone(dt.UTC)
        return fixed.replace(tzinfo=None) if remove_tzinfo else fixed

    botocore.auth.get_current_datetime = get_current_datetime
    _clock_installed = True


@contextlib.contextmanager
def _signing_clock(when: dt.datetime | None):
    """Within the block, botocore signs (in this thread/context only) as if it were ``when``."""
    if when is None:
        yield
        return
    _install_signing_clock()
    token = _fixed_signing_time.set(when)
    try:
        yield
    finally:
        _fixed_signing_time.reset(token)


def url_window(ttl: int | None = None, now: float | None = None) -> tuple[int, int]:
    """(window start, expiry) in Unix seconds for a URL issued at ``now`` (DESIGN.md §8, stable URLs).

    Windows are ``ttl / 2`` long and aligned to the epoch; every URL issued in one window expires at
    the same time, the end of the window plus ``ttl`` — i.e. ``now + ttl`` rounded up to the next
    multiple of ``ttl / 2`` — so a URL always has more than ``ttl`` seconds left and one variant has
    one URL per window."""
    ttl = ttl or settings.MEDIA_URL_TTL_SECONDS
    half = max(1, ttl // 2)
    now = time.time() if now is None else now
    start = int(math.floor(now / half) * half)
    return start, start + half + ttl


# --- the two backends ---------------------------------------------------------------------------------


class LocalBackend:
    """Files under ``FileSystemStorage.location``. Every URL is a signed Django URL, checked at
    request time, so nothing it issues is a bearer credential for hidden media."""

    bearer_urls = False

    def __init__(self, store: Storage):
        self.store = store

    def save(self, key: str, source: Path | BinaryIO, content_type: str | None) -> None:
        path = Path(self.store.path(key))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.part")
        try:
            if isinstance(source, Path):
                shutil.copyfile(source, tmp)
            else:
                with tmp.open("wb") as out:
                    shutil.copyfileobj(source, out, CHUNK)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a refused or broken body leaves nothing behind
            raise
        tmp.replace(path)  # atomic: readers never see half a file

    def download_to(self, key: str, dest: Path) -> None:
        with self.store.open(key, "rb") as src, dest.open("wb") as out:
            shutil.copyfileobj(src, out, CHUNK)

    def read_head(self, key: str, n: int) -> bytes:
        with self.store.open(key, "rb") as fh:
            return fh.read(n)

    def copy(self, src: str, dst: str, content_type: str | None) -> None:
        target = Path(self.store.path(dst))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{uuid.uuid4().hex[:12]}.part")
        shutil.copyfile(self.store.path(src), tmp)
        tmp.replace(target)

    def delete_prefix(self, prefix: str) -> int:
        root = Path(self.store.path(prefix))
        if not root.exists():
            return 0
        count = sum(1 for p in root.rglob("*") if p.is_file())
        shutil.rmtree(root)
        return count

    def open_for_response(self, key: str) -> File:
        return self.store.open(key, "rb")

    def stat(self, key: str) -> ObjectInfo:
        try:
            st = os.stat(self.store.path(key))
        except (FileNotFoundError, NotADirectoryError):
            raise FileNotFoundError(key) from None
        return ObjectInfo(size=st.st_size, modified=dt.datetime.fromtimestamp(st.st_mtime, tz=dt.UTC))

    def iter_range(self, key: str, start: int, length: int) -> Iterator[bytes]:
        # Opened now, not when the first chunk is pulled: a read error (a failing disk) is raised to
        # the caller while it can still answer 503, instead of breaking a response already started.
        fh = open(self.store.path(key), "rb")  # noqa: PTH123, SIM115
        try:
            fh.seek(start)
        except OSError:
            fh.close()
            raise

        def chunks() -> Iterator[bytes]:
            with fh:
                left = length
                while left > 0:
                    chunk = fh.read(min(RANGE_CHUNK, left))
                    if not chunk:
                        break
                    left -= len(chunk)
                    yield chunk

        return chunks()

    def list_prefix(self, prefix: str) -> list[str]:
        root = Path(self.store.path(prefix))
        if not root.is_dir():
            return []
        base = Path(self.store.path(""))
        return sorted(
            p.relative_to(base).as_posix()
            for p in root.rglob("*")
            if p.is_file() and ".part" not in p.suffixes
        )

    def assemble(self, keys: Iterable[str], dst: str, content_type: str | None) -> tuple[int, str]:
        """Concatenate objects into ``dst`` by streaming (one chunk in memory at a time)."""
        digest, total = hashlib.sha256(), 0
        path = Path(self.store.path(dst))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.part")
        with tmp.open("wb") as out:
            for key in keys:
                with open(self.store.path(key), "rb") as src:  # noqa: PTH123
                    for chunk in iter(lambda s=src: s.read(CHUNK), b""):
                        digest.update(chunk)
                        out.write(chunk)
                        total += len(chunk)
        tmp.replace(path)
        return total, digest.hexdigest()

    def presigned_get(
        self, key: str, *, mime_type: str, disposition: str, ttl: int, signed_at: dt.datetime | None = None
    ) -> str | None:
        return None  # served through Django

    def upload_target(self, *, key: str, content_type: str, max_bytes: int, ttl: int) -> dict | None:
        return None  # the signed Django PUT


class S3Backend:
    """A private bucket through django-storages' ``S3Storage``. Published media get presigned GETs,
    which are bearer URLs: they keep working until they expire unless the object's key changes —
    hence ``rotated_key`` and ``media.revocation``."""

    bearer_urls = True

    def __init__(self, store: Storage):
        self.store = store

    def _object_key(self, key: str) -> str:
        # The bucket key for a storage key (what django-storages' name normalisation does, for our
        # canonical keys): the configured location, if any, in front.
        location = (self.store.location or "").strip("/")
        return f"{location}/{clean_key(key)}" if location else clean_key(key)

    def _object(self, key: str):
        return self.store.bucket.Object(self._object_key(key))

    def save(self, key: str, source: Path | BinaryIO, content_type: str | None) -> None:
        if isinstance(source, Path):
            with source.open("rb") as fh:
                self._save(key, fh, content_type)
        else:
            self._save(key, source, content_type)

    def _save(self, key: str, fh: BinaryIO, content_type: str | None) -> None:
        content = File(fh, name=posixpath.basename(key))
        content.content_type = content_type  # S3Storage sends it as the object's Content-Type
        saved = self.store.save(key, content)
        if saved != key:  # file_overwrite is on in settings; anything else would lose track of bytes
            raise RuntimeError(f"S3 storage saved {key!r} as {saved!r}")

    def download_to(self, key: str, dest: Path) -> None:
        self._object(key).download_file(str(dest))

    def read_head(self, key: str, n: int) -> bytes:
        return self._object(key).get(Range=f"bytes=0-{n - 1}")["Body"].read()

    def copy(self, src: str, dst: str, content_type: str | None) -> None:
        extra = {"ContentType": content_type, "MetadataDirective": "REPLACE"} if content_type else {}
        self.store.connection.meta.client.copy(
            {"Bucket": self.store.bucket_name, "Key": self._object_key(src)},
            self.store.bucket_name,
            self._object_key(dst),
            ExtraArgs=extra,
        )

    def delete_prefix(self, prefix: str) -> int:
        deleted = 0
        for obj in self.store.bucket.objects.filter(Prefix=self._object_key(prefix.rstrip("/")) + "/"):
            obj.delete()
            deleted += 1
        return deleted

    def open_for_response(self, key: str) -> Iterator[bytes]:
        from botocore.exceptions import ClientError

        try:
            body = self._object(key).get()["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(key) from exc
            raise
        return body.iter_chunks(CHUNK)

    def stat(self, key: str) -> ObjectInfo:
        from botocore.exceptions import ClientError

        try:
            head = self.store.connection.meta.client.head_object(
                Bucket=self.store.bucket_name, Key=self._object_key(key)
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                raise FileNotFoundError(key) from exc
            raise
        return ObjectInfo(size=head["ContentLength"], modified=head["LastModified"])

    def iter_range(self, key: str, start: int, length: int) -> Iterator[bytes]:
        if length <= 0:
            return iter(())
        body = self.store.connection.meta.client.get_object(
            Bucket=self.store.bucket_name,
            Key=self._object_key(key),
            Range=f"bytes={start}-{start + length - 1}",
        )["Body"]
        return body.iter_chunks(RANGE_CHUNK)

    def list_prefix(self, prefix: str) -> list[str]:
        location = (self.store.location or "").strip("/")
        cut = len(location) + 1 if location else 0
        return sorted(
            o.key[cut:]
            for o in self.store.bucket.objects.filter(Prefix=self._object_key(prefix.rstrip("/")) + "/")
        )

    # S3 multipart upload (resumable uploads): the client sends parts straight to S3.
    def _client(self):
        return self.store.connection.meta.client

    def multipart_start(self, key: str, content_type: str) -> str:
        return self._client().create_multipart_upload(
            Bucket=self.store.bucket_name, Key=self._object_key(key), ContentType=content_type
        )["UploadId"]

    def multipart_part_url(self, key: str, multipart_id: str, part_number: int, ttl: int) -> str:
        return self._client().generate_presigned_url(
            "upload_part",
            Params={
                "Bucket": self.store.bucket_name,
                "Key": self._object_key(key),
                "UploadId": multipart_id,
                "PartNumber": part_number,
            },
            ExpiresIn=ttl,
            HttpMethod="PUT",
        )

    def multipart_parts(self, key: str, multipart_id: str) -> list[dict]:
        parts, marker = [], 0
        while True:
            page = self._client().list_parts(
                Bucket=self.store.bucket_name,
                Key=self._object_key(key),
                UploadId=multipart_id,
                PartNumberMarker=marker,
            )
            parts += [
                {"part_number": p["PartNumber"], "size": p["Size"], "etag": p["ETag"].strip('"')}
                for p in page.get("Parts", [])
            ]
            if not page.get("IsTruncated"):
                return parts
            marker = page["NextPartNumberMarker"]

    def multipart_complete(self, key: str, multipart_id: str, parts: list[dict]) -> None:
        self._client().complete_multipart_upload(
            Bucket=self.store.bucket_name,
            Key=self._object_key(key),
            UploadId=multipart_id,
            MultipartUpload={
                "Parts": [{"PartNumber": p["part_number"], "ETag": f'"{p["etag"]}"'} for p in parts]
            },
        )

    def multipart_abort(self, key: str, multipart_id: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self._client().abort_multipart_upload(
                Bucket=self.store.bucket_name, Key=self._object_key(key), UploadId=multipart_id
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                raise

    def presigned_get(
        self, key: str, *, mime_type: str, disposition: str, ttl: int, signed_at: dt.datetime | None = None
    ) -> str:
        with _signing_clock(signed_at):
            return self.store.url(
                clean_key(key),
                parameters={"ResponseContentType": mime_type, "ResponseContentDisposition": disposition},
                expire=ttl,
            )

    def upload_target(self, *, key: str, content_type: str, max_bytes: int, ttl: int) -> dict:
        post = self.store.connection.meta.client.generate_presigned_post(
            Bucket=self.store.bucket_name,
            Key=self._object_key(key),
            Fields={"Content-Type": content_type},
            Conditions=[{"Content-Type": content_type}, ["content-length-range", 1, max_bytes]],
            ExpiresIn=ttl,
        )
        return {"method": "POST", "url": post["url"], "fields": post["fields"], "headers": {}}


_chosen: tuple[Storage, LocalBackend | S3Backend] | None = None


def backend() -> LocalBackend | S3Backend:
    """The backend for ``STORAGES["default"]``, chosen once per configured storage."""
    global _chosen
    store = storages["default"]
    if _chosen is None or _chosen[0] is not store:
        from storages.backends.s3 import S3Storage

        _chosen = (store, S3Backend(store) if isinstance(store, S3Storage) else LocalBackend(store))
    return _chosen[1]


def issues_bearer_urls() -> bool:
    """True when URLs of published media work without asking Django (S3 presigned GETs)."""
    return backend().bearer_urls


# --- bytes ------------------------------------------------------------------------------------------


def save(key: str, source: Path | BinaryIO, content_type: str | None = None) -> str:
    """Store bytes under exactly ``key`` (overwriting), streaming from a path or file object."""
    backend().save(clean_key(key), source, content_type)
    return key


def open_read(key: str) -> File:
    return backend().store.open(clean_key(key), "rb")


def exists(key: str) -> bool:
    return backend().store.exists(clean_key(key))


def size(key: str) -> int:
    return backend().store.size(clean_key(key))


def delete(key: str) -> None:
    if key and backend().store.exists(clean_key(key)):
        backend().store.delete(key)


def stat(key: str) -> ObjectInfo:
    """Size and modification time of an object (a HEAD on S3). FileNotFoundError when missing."""
    return backend().stat(clean_key(key))


def iter_range(key: str, start: int, length: int) -> Iterator[bytes]:
    """``length`` bytes of ``key`` from byte ``start``, in chunks: a seek on the filesystem, a ranged
    GetObject on S3. Never reads what lies outside the range."""
    return backend().iter_range(clean_key(key), start, length)


def list_prefix(prefix: str) -> list[str]:
    """Keys of every object under the folder ``prefix`` (sorted)."""
    return backend().list_prefix(clean_key(prefix.rstrip("/")) + "/")


def file_sha256(path: Path) -> str:
    """The sha256 of a local file, streamed: recorded with every variant as it is stored, and
    served as its strong ETag (DESIGN.md §8)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of(key: str) -> str:
    """The sha256 of a stored object, computed by streaming it (for rows written before variants
    recorded theirs). Callers cache the answer."""
    digest = hashlib.sha256()
    info = stat(key)
    for chunk in iter_range(key, 0, info.size):
        digest.update(chunk)
    return digest.hexdigest()


def delete_prefix(prefix: str) -> int:
    """Delete every object under ``prefix`` (a media's folder). Returns how many were deleted."""
    return backend().delete_prefix(clean_key(prefix.rstrip("/")) + "/")


def delete_media_objects(user_id: int, media_id: Any) -> int:
    """Delete every stored object of one medium (all key generations). Returns how many."""
    return delete_prefix(media_prefix(user_id, media_id))


def download_to(key: str, dest: Path) -> Path:
    """Copy an object to a local file (processors work on local paths), streaming."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    backend().download_to(clean_key(key), dest)
    return dest


def local_path(key: str) -> Path | None:
    """Where the object's bytes are on this machine's disk (LocalBackend), or None (S3)."""
    store = backend()
    if isinstance(store, LocalBackend):
        return Path(store.store.path(clean_key(key)))
    return None


def read_head(key: str, n: int = 4096) -> bytes:
    """The first bytes (for sniffing). On S3 a ranged GET: never the whole object."""
    return backend().read_head(clean_key(key), n)


def copy(src: str, dst: str, content_type: str | None = None) -> str:
    """Copy an object; on S3 the copy happens inside S3 (multipart for large objects)."""
    backend().copy(clean_key(src), clean_key(dst), content_type)
    return dst


# --- URLs ---------------------------------------------------------------------------------------------


def _absolute(path: str, request=None) -> str:
    if settings.MEDIA_PUBLIC_BASE_URL:
        return settings.MEDIA_PUBLIC_BASE_URL.rstrip("/") + path
    return request.build_absolute_uri(path) if request is not None else path


def signed_url(
    key: str,
    *,
    media_id: Any,
    mime_type: str,
    filename: str,
    public: bool,
    request=None,
    ttl: int | None = None,
) -> str:
    """A signed, expiring URL for an object, the same string for every call within one URL window
    (``url_window``: DESIGN.md §8 stable URLs), so browsers and CDNs can cache what it names.

    ``public`` (the post is published): on S3 a presigned GET signed at the window's start, else a
    signed Django URL (no timestamp in the signature: ``Signer``, not ``TimestampSigner``). Media of a
    post that is not published is always served through Django, which checks at request time that
    the requester is the owner or staff: such a URL works for nobody else, even if it leaks.
    A public S3 URL stops working when the medium's keys are rotated (``media.revocation``).
    """
    start, expires = url_window(ttl)
    disposition = f"inline; filename*=UTF-8''{quote(filename)}"
    if public:
        url = backend().presigned_get(
            clean_key(key),
            mime_type=mime_type,
            disposition=disposition,
            ttl=expires - start,
            signed_at=dt.datetime.fromtimestamp(start, tz=dt.UTC),
        )
        if url:
            return url
    token = signing.Signer(salt=_URL_SALT).sign_object(
        {"k": key, "m": str(media_id), "t": mime_type, "f": filename, "e": expires}, compress=True
    )
    path = reverse("media-file", kwargs={"token": token})
    if public:
        return _absolute(path, request)
    # Private media is checked against the viewer's session or token: keep it on the API host.
    return request.build_absolute_uri(path) if request is not None else path


def signed_prefix_url(
    folder: str,
    *,
    media_id: Any,
    entry: str,
    public: bool,
    request=None,
    ttl: int | None = None,
    route: str = "media-tree",
) -> str:
    """A signed URL of ``entry`` (e.g. ``master.m3u8``) inside ``folder`` whose token, in the path,
    grants every object under ``folder``: ``/m/h/<token>/master.m3u8``, and a player resolving the
    playlist's relative URIs asks for ``/m/h/<token>/720p/seg_001.m4s`` under the same grant.
    Stable within a URL window like ``signed_url``. Always served through Django (which checks the
    viewer at request time for anything not published), on both backends. ``route`` names the view
    that serves the grant (``live-tree`` for a livestream's live HLS, where ``media_id`` is the
    stream's id); each view checks that the folder is its object's current one."""
    _, expires = url_window(ttl)
    token = signing.Signer(salt=_PREFIX_SALT).sign_object(
        {"p": clean_key(folder.rstrip("/")), "m": str(media_id), "e": expires}, compress=True
    )
    path = reverse(route, kwargs={"token": token, "path": entry})
    if public:
        return _absolute(path, request)
    return request.build_absolute_uri(path) if request is not None else path


@dataclass
class SignedFolder:
    folder: str
    media_id: str
    expires: int


def verify_prefix_token(token: str) -> SignedFolder | None:
    """The folder a ``/m/h/<token>/…`` URL grants, or None (bad signature, expired, odd folder)."""
    try:
        data = signing.Signer(salt=_PREFIX_SALT).unsign_object(token)
    except (signing.BadSignature, ValueError):
        return None
    if not isinstance(data, dict) or int(data.get("e", 0)) < time.time():
        return None
    try:
        folder = clean_key(data.get("p"))
    except InvalidKey:
        return None
    return SignedFolder(folder=folder, media_id=str(data.get("m")), expires=int(data["e"]))


@dataclass
class SignedFile:
    key: str
    media_id: str
    mime_type: str
    filename: str
    expires: int = 0


def verify_url_token(token: str) -> SignedFile | None:
    """The signed file a ``/m/<token>`` URL names, or None when the signature is bad, the URL has
    expired, or the key in it is not canonical (``clean_key``)."""
    try:
        data = signing.Signer(salt=_URL_SALT).unsign_object(token)
    except (signing.BadSignature, ValueError):
        return None
    if not isinstance(data, dict) or int(data.get("e", 0)) < time.time():
        return None
    try:
        key = clean_key(data.get("k"))
    except InvalidKey:
        return None
    return SignedFile(
        key=key, media_id=data["m"], mime_type=data["t"], filename=data["f"], expires=int(data["e"])
    )


def open_for_response(key: str) -> File | Iterator[bytes]:
    """The bytes of ``key`` for an HTTP response: the file itself on the filesystem, S3's body in
    chunks on S3 (one GET, never spooled to local disk). FileNotFoundError when it is missing."""
    return backend().open_for_response(clean_key(key))


# --- direct uploads ---------------------------------------------------------------------------------------


def upload_target(
    *, upload_id: Any, key: str, content_type: str, max_bytes: int, ttl: int, request=None
) -> dict:
    """Where the client sends the bytes. S3: a presigned POST whose policy pins the key, the
    Content-Type and a content-length-range (moto does not enforce that policy; the attach-time
    HEAD and sniff are the checks we rely on, docs/operations.md). Filesystem: a signed, single-use
    Django PUT URL."""
    target = backend().upload_target(
        key=clean_key(key), content_type=content_type, max_bytes=max_bytes, ttl=ttl
    )
    if target is not None:
        return target
    token = signing.dumps({"u": str(upload_id), "e": int(time.time()) + ttl}, salt=_UPLOAD_SALT)
    path = reverse("upload-data", kwargs={"upload_id": upload_id}) + f"?signature={quote(token)}"
    return {
        "method": "PUT",
        "url": request.build_absolute_uri(path) if request is not None else path,
        "fields": {},
        "headers": {"Content-Type": content_type},
    }


def verify_upload_token(token: str, upload_id: Any) -> bool:
    try:
        data = signing.loads(token, salt=_UPLOAD_SALT)
    except signing.BadSignature:
        return False
    return isinstance(data, dict) and data.get("u") == str(upload_id) and int(data.get("e", 0)) >= time.time()


# --- resumable (multipart) uploads ------------------------------------------------------------------------
# S3 multipart semantics on both backends (DESIGN.md §8): on S3 the parts go straight to S3 through
# presigned UploadPart URLs; on the filesystem each part is a signed Django PUT written to its own file
# (``upload_part_key``), assembled on ``complete`` by streaming.


def multipart_start(key: str, content_type: str) -> str:
    """Open a multipart upload for ``key``: S3's UploadId, or "" on the filesystem (nothing to open)."""
    be = backend()
    return be.multipart_start(clean_key(key), content_type) if isinstance(be, S3Backend) else ""


def part_target(
    *, upload_id: Any, key: str, multipart_id: str, part_number: int, ttl: int, request=None
) -> dict:
    """Where the client PUTs part ``part_number`` (1-based): {part_number, method, url, headers}.
    S3: a presigned UploadPart URL (S3 answers the part's ETag in a header); filesystem: a signed
    Django PUT URL (the ETag is in the header and the JSON body)."""
    be = backend()
    if isinstance(be, S3Backend):
        url = be.multipart_part_url(clean_key(key), multipart_id, part_number, ttl)
    else:
        token = signing.dumps(
            {"u": str(upload_id), "n": part_number, "e": int(time.time()) + ttl}, salt=_PART_SALT
        )
        path = (
            reverse("upload-part-data", kwargs={"upload_id": upload_id, "part_number": part_number})
            + f"?signature={quote(token)}"
        )
        url = request.build_absolute_uri(path) if request is not None else path
    return {"part_number": part_number, "method": "PUT", "url": url, "headers": {}}


def verify_part_token(token: str, upload_id: Any, part_number: int) -> bool:
    """True when ``token`` signs a PUT of this part of this upload and has not expired."""
    try:
        data = signing.loads(token, salt=_PART_SALT)
    except signing.BadSignature:
        return False
    return (
        isinstance(data, dict)
        and data.get("u") == str(upload_id)
        and data.get("n") == part_number
        and int(data.get("e", 0)) >= time.time()
    )


def multipart_parts(key: str, multipart_id: str) -> list[dict] | None:
    """The parts S3 holds for an open multipart upload ([{part_number, size, etag}]), or None on the
    filesystem (where the upload row records them as they arrive)."""
    be = backend()
    return be.multipart_parts(clean_key(key), multipart_id) if isinstance(be, S3Backend) else None


def multipart_complete(key: str, multipart_id: str, parts: list[dict]) -> tuple[int, str]:
    """Join the parts (in ``parts`` order, [{part_number, etag}]) into the object ``key``.
    S3: CompleteMultipartUpload (S3 checks the ETags); returns (size, "") — the worker hashes the
    bytes. Filesystem: streams the part files into ``key`` (one chunk in memory at a time), deletes
    them, and returns (size, sha256)."""
    be = backend()
    key = clean_key(key)
    if isinstance(be, S3Backend):
        be.multipart_complete(key, multipart_id, parts)
        return be.stat(key).size, ""
    size, sha = be.assemble([upload_part_key(key, p["part_number"]) for p in parts], key, None)
    be.delete_prefix(f"{key}-parts/")
    return size, sha


def multipart_abort(key: str, multipart_id: str) -> None:
    """Throw away an unfinished multipart upload and every part received (idempotent)."""
    be = backend()
    if isinstance(be, S3Backend) and multipart_id:
        be.multipart_abort(clean_key(key), multipart_id)
    else:
        be.delete_prefix(f"{clean_key(key)}-parts/")
