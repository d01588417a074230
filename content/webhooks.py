"""Creators' webhooks (DESIGN.md §10): registration, signing, delivery with retries.

- A webhook is {url, events}; its signing secret is generated here, returned once by
  ``webhook_create``, and stored encrypted (Fernet, key derived from ``SECRET_KEY`` with HMAC, so a
  database dump or the admin never shows it; rotating SECRET_KEY makes old secrets unreadable and
  their hooks must be registered again).
- Every event of a subscribed type becomes a ``WebhookDelivery`` with a fixed JSON body
  ``{id, type, created_at, data}`` (``id`` is the delivery id, also sent as ``X-Postflow-Delivery``),
  signed ``X-Postflow-Signature: sha256=<hex HMAC-SHA256 of the body with the secret>``.
- The actor ``deliver_webhook`` (queue ``webhooks``) POSTs it through the one guarded outbound
  client (``config.outbound``: SSRF guard; redirects are not followed; https only unless DEBUG).
  A non-2xx answer or a network error is retried with backoff (``RETRY_DELAYS``) until the delivery
  is ``WEBHOOK_RETRY_HOURS`` (24) old. The hook is disabled after ``WEBHOOK_MAX_FAILURES`` (20)
  straight failures, counted at most once per ``WEBHOOK_FAILURE_SPACING_SECONDS`` (60) so that a
  burst of events to a receiver that is briefly down does not disable it; any success resets it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from config.errors import NotFound, ValidationFailed
from config.locking import lock_rows
from content.models import EVENT_TYPES, DeliveryStatus, Webhook, WebhookDelivery

logger = logging.getLogger("postflow.webhooks")

# Seconds before attempt n+1 (the last one repeats until the delivery is WEBHOOK_RETRY_HOURS old).
RETRY_DELAYS = (2, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
MAX_HOOKS_PER_USER = 10
USER_AGENT = "Postflow-Webhooks/1"


# --- secrets ---------------------------------------------------------------------------------------


def _fernet():
    from cryptography.fernet import Fernet

    key = hmac.new(settings.SECRET_KEY.encode(), b"postflow.webhook-secret.v1", hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt_secret(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode()


def decrypt_secret(token: str) -> str:
    return _fernet().decrypt(token.encode()).decode()


def signature(secret: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of the exact body bytes with the hook's secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- registration ------------------------------------------------------------------------------------


def _validate_url(url: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(url or "")
    allowed = ("https",) if not settings.DEBUG else ("https", "http")
    if parts.scheme not in allowed or not parts.hostname:
        raise ValidationFailed(
            "The webhook URL must be an https:// URL." if not settings.DEBUG else "Use an http(s):// URL.",
            code="invalid_webhook_url",
            extra={"errors": {"url": ["Must be https."]}},
        )


@transaction.atomic
def webhook_create(*, user: AbstractBaseUser, url: str, events: list[str]) -> tuple[Webhook, str]:
    """Register a hook for the user's own events. Returns the hook and its secret (the only time the
    secret is available). ``events``: a non-empty subset of ``EVENT_TYPES``. Raises
    ``ValidationFailed`` (``invalid_webhook_url``, ``invalid``, ``too_many_webhooks``)."""
    _validate_url(url)
    events = list(dict.fromkeys(events or []))
    unknown = [e for e in events if e not in EVENT_TYPES]
    if not events or unknown:
        raise ValidationFailed(
            f"Choose events from: {', '.join(EVENT_TYPES)}.",
            extra={"errors": {"events": [f"Unknown: {unknown}" if unknown else "Required."]}},
        )
    if Webhook.objects.filter(user=user, deleted_at__isnull=True).count() >= MAX_HOOKS_PER_USER:
        raise ValidationFailed(
            f"At most {MAX_HOOKS_PER_USER} webhooks per account.", code="too_many_webhooks"
        )
    secret = "whsec_" + secrets.token_urlsafe(32)
    hook = Webhook.objects.create(user=user, url=url, events=events, secret_encrypted=encrypt_secret(secret))
    return hook, secret


def _own_hook(user: AbstractBaseUser, webhook_id: UUID | str) -> Webhook:
    try:
        return Webhook.objects.get(pk=webhook_id, user=user, deleted_at__isnull=True)
    except (Webhook.DoesNotExist, ValueError):
        raise NotFound("Webhook not found.") from None


@transaction.atomic
def webhook_delete(*, user: AbstractBaseUser, webhook_id: UUID | str) -> None:
    """Stop sending to the hook (its delivery log is kept). NotFound for another user's hook."""
    hook = _own_hook(user, webhook_id)
    hook.deleted_at = timezone.now()
    hook.is_active = False
    hook.save(update_fields=["deleted_at", "is_active"])


def webhook_get(*, user: AbstractBaseUser, webhook_id: UUID | str) -> Webhook:
    """The user's own hook, or NotFound."""
    return _own_hook(user, webhook_id)


# --- fan-out and delivery --------------------------------------------------------------------------


def enqueue(user_id: int, type: str, data: dict[str, Any]) -> list[WebhookDelivery]:
    """Create a delivery for each of the user's active hooks subscribed to ``type`` and queue it
    (called by ``content.events`` after commit). Never raises: a failure is logged."""
    try:
        hooks = [
            h
            for h in Webhook.objects.filter(user_id=user_id, is_active=True, deleted_at__isnull=True)
            if type in h.events
        ]
        out = []
        for hook in hooks:
            delivery = WebhookDelivery(webhook=hook, event_type=type)
            created = timezone.now()
            delivery.body = json.dumps(
                {"id": str(delivery.id), "type": type, "created_at": created.isoformat(), "data": data},
                separators=(",", ":"),
                default=str,
            )
            delivery.next_attempt_at = created
            delivery.save()
            out.append(delivery)
            _send(delivery.pk, delay_ms=0)
        return out
    except Exception:
        logger.exception("could not queue webhooks for user %s (%s)", user_id, type)
        return []


def _send(delivery_id, *, delay_ms: int) -> None:
    import dramatiq

    actor = dramatiq.get_broker().get_actor("deliver_webhook")
    try:
        actor.send_with_options(args=(str(delivery_id),), delay=delay_ms or None)
    except Exception as exc:
        logger.warning("could not queue webhook delivery %s: %s", delivery_id, exc)


def retry_delay(attempts: int) -> int:
    """Seconds to wait after ``attempts`` failed attempts."""
    return RETRY_DELAYS[min(attempts, len(RETRY_DELAYS)) - 1] if attempts else 0


def deliver(delivery_id: UUID | str) -> str:
    """One attempt at one delivery (the ``deliver_webhook`` actor's body). Returns the delivery's
    status afterwards (``busy`` when another attempt holds it, ``missing`` when it is gone). A
    delivery another attempt holds, or that is no longer pending, is left alone (at most one success
    per delivery id)."""
    from config import outbound

    with transaction.atomic():
        delivery = (
            # of=self: lock the delivery only. Locking the joined webhook row too made concurrent
            # deliveries to one hook skip each other's (and so drop them).
            lock_rows(WebhookDelivery.objects.all(), skip_locked=True, of=("self",))
            .select_related("webhook")
            .filter(pk=delivery_id)
            .first()
        )
        if delivery is None:  # another attempt holds it (a redelivered message), or it is gone
            return "busy" if WebhookDelivery.objects.filter(pk=delivery_id).exists() else "missing"
        if delivery.status != DeliveryStatus.PENDING:
            return delivery.status
        hook = delivery.webhook
        now = timezone.now()
        if not hook.is_active or hook.deleted_at:
            delivery.status = DeliveryStatus.FAILED
            delivery.last_error = "The webhook was disabled or deleted."
            delivery.save(update_fields=["status", "last_error"])
            return delivery.status
        body = delivery.body.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Postflow-Event": delivery.event_type,
            "X-Postflow-Delivery": str(delivery.pk),
            "X-Postflow-Signature": signature(decrypt_secret(hook.secret_encrypted), body),
        }
        started = time.monotonic()
        status_code, error = None, ""
        try:
            response = outbound.fetch(
                hook.url,
                method="POST",
                body=body,
                headers=headers,
                timeout=settings.WEBHOOK_TIMEOUT_SECONDS,
                max_bytes=64 * 1024,
                max_redirects=0,
                require_https=not settings.DEBUG,
            )
            status_code = response.status
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
        except outbound.OutboundError as exc:
            error = f"{getattr(exc, 'code', 'error')}: {exc}"[:500]
            status_code = getattr(exc, "status", None)
        elapsed_ms = round((time.monotonic() - started) * 1000, 1)
        delivery.attempts += 1
        delivery.last_status_code = status_code
        delivery.last_error = error
        delivery.log = [
            *delivery.log[-49:],
            {"at": now.isoformat(), "status": status_code, "error": error, "ms": elapsed_ms},
        ]
        if not error:
            delivery.status = DeliveryStatus.DELIVERED
            delivery.delivered_at = timezone.now()
            delivery.next_attempt_at = None
            if hook.consecutive_failures:
                Webhook.objects.filter(pk=hook.pk).update(consecutive_failures=0)
        else:
            _count_failure(hook, now)
            age = now - delivery.created_at
            delay = retry_delay(delivery.attempts)
            if age + timedelta(seconds=delay) > timedelta(hours=settings.WEBHOOK_RETRY_HOURS):
                delivery.status = DeliveryStatus.FAILED
                delivery.next_attempt_at = None
            else:
                delivery.next_attempt_at = now + timedelta(seconds=delay)
                transaction.on_commit(lambda: _send(delivery.pk, delay_ms=delay * 1000))
        delivery.save(
            update_fields=[
                "attempts",
                "last_status_code",
                "last_error",
                "log",
                "status",
                "delivered_at",
                "next_attempt_at",
            ]
        )
        return delivery.status


def _count_failure(hook: Webhook, now) -> None:
    """One more straight failure, counted at most once per WEBHOOK_FAILURE_SPACING_SECONDS; the
    hook is disabled at WEBHOOK_MAX_FAILURES."""
    hook = lock_rows(Webhook.objects.all()).get(pk=hook.pk)
    spacing = timedelta(seconds=settings.WEBHOOK_FAILURE_SPACING_SECONDS)
    last = hook.last_failure_at
    if last is not None and now - last < spacing:
        return
    hook.consecutive_failures += 1
    hook.last_failure_at = now
    fields = ["consecutive_failures", "last_failure_at"]
    if hook.consecutive_failures >= settings.WEBHOOK_MAX_FAILURES:
        hook.is_active = False
        hook.disabled_at = now
        hook.disabled_reason = f"{hook.consecutive_failures} straight failed deliveries"
        fields += ["is_active", "disabled_at", "disabled_reason"]
        logger.warning("webhook %s disabled after %s straight failures", hook.pk, hook.consecutive_failures)
    hook.save(update_fields=fields)
