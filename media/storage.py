"""The one seam over django-storages (DESIGN.md §2). Code above it never knows which backend runs.

Keys: ``uploads/{user}/{upload_id}`` for staged uploads, ``media/{user}/{media_id}/original.{ext}``
and ``media/{user}/{media_id}/{variant}.{ext}``. Clients never see or build keys: they get URLs.
"""

from __future__ import annotations

import mimetypes
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from django.conf import settings
from django.core import signing
from django.core.files import File
from django.core.files.storage import storages
from django.urls import reverse

_URL_SALT = "postflow.media-url"
_UPLOAD_SALT = "postflow.upload-url"
CHUNK = 1024 * 1024


def backend():
    return storages["default"]


def is_s3() -> bool:
    return backend().__class__.__name__ == "S3Storage"


# --- keys ------------------------------------------------------------------------------------------


def upload_key(user_id: int, upload_id: Any) -> str:
    return f"uploads/{user_id}/{upload_id}"


def media_key(user_id: int, media_id: Any, name: str, ext: str) -> str:
    return f"media/{user_id}/{media_id}/{name}.{ext.lstrip('.')}"


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
    }
    if mime_type in special:
        return special[mime_type]
    guess = mimetypes.guess_extension(mime_type or "") or ".bin"
    return guess.lstrip(".")


# --- bytes ------------------------------------------------------------------------------------------


def save(key: str, source: Path | BinaryIO, content_type: str | None = None) -> str:
    """Store bytes under exactly ``key`` (overwriting), streaming from a path or file object."""
    store = backend()
    if is_s3():
        params = {"ContentType": content_type} if content_type else {}
        if isinstance(source, Path):
            with source.open("rb") as fh:
                store.bucket.Object(store._normalize_name(key)).upload_fileobj(fh, ExtraArgs=params)
        else:
            store.bucket.Object(store._normalize_name(key)).upload_fileobj(source, ExtraArgs=params)
        return key
    path = Path(store.path(key))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.part")
    if isinstance(source, Path):
        shutil.copyfile(source, tmp)
    else:
        with tmp.open("wb") as out:
            shutil.copyfileobj(source, out, CHUNK)
    tmp.replace(path)  # atomic: readers never see half a file
    return key


def open_read(key: str) -> File:
    return backend().open(key, "rb")


def exists(key: str) -> bool:
    return backend().exists(key)


def size(key: str) -> int:
    return backend().size(key)


def delete(key: str) -> None:
    if key and backend().exists(key):
        backend().delete(key)


def delete_prefix(prefix: str) -> int:
    """Delete every object under ``prefix`` (a media's folder). Returns how many were deleted."""
    store = backend()
    if is_s3():
        deleted = 0
        for obj in store.bucket.objects.filter(Prefix=store._normalize_name(prefix)):
            obj.delete()
            deleted += 1
        return deleted
    root = Path(store.path(prefix))
    if not root.exists():
        return 0
    count = sum(1 for p in root.rglob("*") if p.is_file())
    shutil.rmtree(root)
    return count


def download_to(key: str, dest: Path) -> Path:
    """Copy an object to a local file (processors work on local paths), streaming."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if is_s3():
        store = backend()
        store.bucket.Object(store._normalize_name(key)).download_file(str(dest))
        return dest
    with open_read(key) as src, dest.open("wb") as out:
        shutil.copyfileobj(src, out, CHUNK)
    return dest


def read_head(key: str, n: int = 4096) -> bytes:
    """The first bytes (for sniffing). On S3 a ranged GET: never the whole object."""
    if is_s3():
        store = backend()
        body = store.bucket.Object(store._normalize_name(key)).get(Range=f"bytes=0-{n - 1}")["Body"]
        return body.read()
    with open_read(key) as fh:
        return fh.read(n)


def copy(src: str, dst: str, content_type: str | None = None) -> str:
    """Copy an object; on S3 the copy happens inside S3 (multipart for large objects)."""
    store = backend()
    if is_s3():
        extra = {"ContentType": content_type, "MetadataDirective": "REPLACE"} if content_type else {}
        store.bucket.meta.client.copy(
            {"Bucket": store.bucket_name, "Key": store._normalize_name(src)},
            store.bucket_name,
            store._normalize_name(dst),
            ExtraArgs=extra,
        )
        return dst
    target = Path(store.path(dst))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{uuid.uuid4().hex[:12]}.part")
    shutil.copyfile(store.path(src), tmp)
    tmp.replace(target)
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
    """A signed, expiring URL for an object.

    ``public`` (the post is published): on S3 a presigned GET, else a signed Django URL. Media of a
    post that is not published is always served through Django, which checks at request time that
    the requester is the owner or staff: such a URL works for nobody else, even if it leaks.
    """
    ttl = ttl or settings.MEDIA_URL_TTL_SECONDS
    disposition = f"inline; filename*=UTF-8''{quote(filename)}"
    if public and is_s3():
        store = backend()
        client = store.bucket.meta.client
        return client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": store.bucket_name,
                "Key": store._normalize_name(key),
                "ResponseContentType": mime_type,
                "ResponseContentDisposition": disposition,
            },
            ExpiresIn=ttl,
        )
    token = signing.dumps(
        {"k": key, "m": str(media_id), "t": mime_type, "f": filename, "e": int(time.time()) + ttl},
        salt=_URL_SALT,
        compress=True,
    )
    path = reverse("media-file", kwargs={"token": token})
    if public:
        return _absolute(path, request)
    # Private media is checked against the viewer's session or token: keep it on the API host.
    return request.build_absolute_uri(path) if request is not None else path


@dataclass
class SignedFile:
    key: str
    media_id: str
    mime_type: str
    filename: str


def verify_url_token(token: str) -> SignedFile | None:
    try:
        data = signing.loads(token, salt=_URL_SALT)
    except signing.BadSignature:
        return None
    if not isinstance(data, dict) or int(data.get("e", 0)) < time.time():
        return None
    return SignedFile(key=data["k"], media_id=data["m"], mime_type=data["t"], filename=data["f"])


def open_for_response(key: str) -> File | Iterator[bytes]:
    """The bytes of ``key`` for an HTTP response: the file itself on the filesystem, S3's body in
    chunks on S3 (one GET, never spooled to local disk). FileNotFoundError when it is missing."""
    if not is_s3():
        return open_read(key)
    from botocore.exceptions import ClientError

    store = backend()
    try:
        body = store.bucket.Object(store._normalize_name(key)).get()["Body"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise FileNotFoundError(key) from exc
        raise
    return body.iter_chunks(CHUNK)


# --- direct uploads ---------------------------------------------------------------------------------------


def upload_target(
    *, upload_id: Any, key: str, content_type: str, max_bytes: int, ttl: int, request=None
) -> dict:
    """Where the client sends the bytes. S3: a presigned POST whose policy pins the key, the
    Content-Type and a content-length-range. Filesystem: a signed, single-use Django PUT URL."""
    if is_s3():
        store = backend()
        client = store.bucket.meta.client
        post = client.generate_presigned_post(
            Bucket=store.bucket_name,
            Key=store._normalize_name(key),
            Fields={"Content-Type": content_type},
            Conditions=[{"Content-Type": content_type}, ["content-length-range", 1, max_bytes]],
            ExpiresIn=ttl,
        )
        return {"method": "POST", "url": post["url"], "fields": post["fields"], "headers": {}}
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
