"""Telling creators (DESIGN.md §10): notifications, their preferences, webhooks, and the live event
stream (SSE). Views parse and render; ``content.notifications``, ``content.webhooks`` and
``content.events`` decide."""

from __future__ import annotations

import asyncio
import secrets
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.core.handlers.asgi import ASGIRequest
from django.db import connections
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import exceptions, generics, serializers
from rest_framework.authtoken.models import Token
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api import JSONParser, error_responses
from content import events, notifications, webhooks
from content.models import EVENT_TYPES, CreatorPreferences, Notification, WebhookDelivery

# --- notifications ---------------------------------------------------------------------------------


class IdCursorPagination(CursorPagination):
    """Newest first by id; a mangled cursor is a 400, not a 404 or a 500."""

    page_size = 20
    max_page_size = 100
    page_size_query_param = "page_size"
    ordering = ("-id",)

    def decode_cursor(self, request):
        try:
            cursor = super().decode_cursor(request)
        except exceptions.NotFound:
            cursor = False
        if cursor is False or (cursor and cursor.position is not None and not str(cursor.position).isdigit()):
            raise exceptions.ValidationError(
                {self.cursor_query_param: ["Invalid cursor; use the `next` or `previous` link as given."]}
            )
        return cursor


class NotificationSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    type = serializers.CharField()
    post_id = serializers.UUIDField(allow_null=True)
    appeal_id = serializers.IntegerField(allow_null=True)
    reason = serializers.CharField(help_text="The moderator's reason, for decisions.")
    data = serializers.DictField()
    read = serializers.BooleanField()
    created_at = serializers.DateTimeField()


class NotificationListView(generics.GenericAPIView):
    permission_classes = [IsAuthenticated]
    pagination_class = IdCursorPagination

    @extend_schema(
        parameters=[OpenApiParameter("unread", OpenApiTypes.BOOL, description="Only unread ones.")],
        responses={200: NotificationSerializer(many=True), **error_responses(400, 401)},
        tags=["notifications"],
        summary="The caller's notifications, newest first",
    )
    def get(self, request):
        unread = request.query_params.get("unread", "").lower()
        if unread not in ("", "true", "false", "1", "0"):
            raise exceptions.ValidationError({"unread": ["Use true or false."]})
        qs = Notification.objects.filter(user=request.user)
        if unread in ("true", "1"):
            qs = qs.filter(read_at__isnull=True)
        page = self.paginate_queryset(qs)
        return self.get_paginated_response([notifications.notification_data(n) for n in page])


class ReadSerializer(serializers.Serializer):
    up_to = serializers.IntegerField(min_value=0, help_text="Mark notifications with id ≤ up_to read.")


class NotificationReadView(APIView):
    permission_classes = [IsAuthenticated]
    parser_classes = [JSONParser]

    @extend_schema(
        request=ReadSerializer,
        responses={
            200: inline_serializer("Marked", {"marked": serializers.IntegerField()}),
            **error_responses(400, 401, 415),
        },
        tags=["notifications"],
        summary="Mark notifications read up to an id",
    )
    def post(self, request):
        data = ReadSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        n = notifications.mark_read(user=request.user, up_to=data.validated_data["up_to"])
        return Response({"marked": n})


class PreferencesSerializer(serializers.Serializer):
    email_notifications = serializers.BooleanField(
        help_text="Email decisions (moderation, appeals, account actions)."
    )


class PreferencesView(APIView):
    permission_classes = [IsAuthenticated]
    parser_classes = [JSONParser]

    def _out(self, user):
        prefs = CreatorPreferences.objects.filter(user=user).first()
        return {"email_notifications": prefs.email_notifications if prefs else True}

    @extend_schema(
        responses={200: PreferencesSerializer, **error_responses(401)},
        tags=["notifications"],
        summary="The caller's notification preferences",
    )
    def get(self, request):
        return Response(self._out(request.user))

    @extend_schema(
        request=PreferencesSerializer,
        responses={200: PreferencesSerializer, **error_responses(400, 401, 415)},
        tags=["notifications"],
        summary="Turn decision emails on or off",
    )
    def patch(self, request):
        data = PreferencesSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        notifications.preferences_update(user=request.user, **data.validated_data)
        return Response(self._out(request.user))


# --- webhooks --------------------------------------------------------------------------------------


class WebhookInSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=2000)
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=EVENT_TYPES), allow_empty=False, max_length=len(EVENT_TYPES)
    )


class WebhookSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    url = serializers.URLField()
    events = serializers.ListField(child=serializers.CharField())
    is_active = serializers.BooleanField()
    consecutive_failures = serializers.IntegerField()
    disabled_reason = serializers.CharField()
    created_at = serializers.DateTimeField()


WebhookCreatedSerializer = inline_serializer(
    name="WebhookCreated",
    fields={
        "id": serializers.UUIDField(),
        "url": serializers.URLField(),
        "events": serializers.ListField(child=serializers.CharField()),
        "secret": serializers.CharField(help_text="Shown once: store it to verify X-Postflow-Signature."),
    },
)


def _hook_data(hook) -> dict:
    return {
        "id": str(hook.pk),
        "url": hook.url,
        "events": hook.events,
        "is_active": hook.is_active,
        "consecutive_failures": hook.consecutive_failures,
        "disabled_reason": hook.disabled_reason,
        "created_at": hook.created_at.isoformat(),
    }


class WebhookListCreateView(APIView):
    permission_classes = [IsAuthenticated]
    parser_classes = [JSONParser]

    @extend_schema(
        responses={200: WebhookSerializer(many=True), **error_responses(401)},
        tags=["webhooks"],
        summary="The caller's webhooks",
    )
    def get(self, request):
        hooks = request.user.webhooks.filter(deleted_at__isnull=True).order_by("-created_at")
        return Response([_hook_data(h) for h in hooks])

    @extend_schema(
        request=WebhookInSerializer,
        responses={201: WebhookCreatedSerializer, **error_responses(400, 401, 415)},
        tags=["webhooks"],
        summary="Register a webhook (the secret is shown once)",
    )
    def post(self, request):
        data = WebhookInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        hook, secret = webhooks.webhook_create(user=request.user, **data.validated_data)
        return Response(
            {"id": str(hook.pk), "url": hook.url, "events": hook.events, "secret": secret}, status=201
        )


class WebhookDetailView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses={204: None, **error_responses(401, 404)}, tags=["webhooks"], summary="Delete")
    def delete(self, request, webhook_id):
        webhooks.webhook_delete(user=request.user, webhook_id=webhook_id)
        return Response(status=204)


class DeliverySerializer(serializers.Serializer):
    id = serializers.UUIDField()
    type = serializers.CharField()
    status = serializers.CharField()
    attempts = serializers.IntegerField()
    last_status_code = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField()
    created_at = serializers.DateTimeField()
    delivered_at = serializers.DateTimeField(allow_null=True)
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    log = serializers.ListField(child=serializers.DictField())


class DeliveryPagination(CursorPagination):
    page_size = 50
    max_page_size = 200
    page_size_query_param = "page_size"
    ordering = ("-created_at", "-id")


class WebhookDeliveriesView(generics.GenericAPIView):
    permission_classes = [IsAuthenticated]
    pagination_class = DeliveryPagination

    @extend_schema(
        responses={200: DeliverySerializer(many=True), **error_responses(401, 404)},
        tags=["webhooks"],
        summary="A webhook's delivery log, newest first",
    )
    def get(self, request, webhook_id):
        hook = webhooks.webhook_get(user=request.user, webhook_id=webhook_id)
        page = self.paginate_queryset(WebhookDelivery.objects.filter(webhook=hook))
        return self.get_paginated_response(
            [
                {
                    "id": str(d.pk),
                    "type": d.event_type,
                    "status": d.status,
                    "attempts": d.attempts,
                    "last_status_code": d.last_status_code,
                    "last_error": d.last_error,
                    "created_at": d.created_at.isoformat(),
                    "delivered_at": d.delivered_at.isoformat() if d.delivered_at else None,
                    "next_attempt_at": d.next_attempt_at.isoformat() if d.next_attempt_at else None,
                    "log": d.log,
                }
                for d in page
            ]
        )


# --- live events (SSE) -----------------------------------------------------------------------------

TICKET_PREFIX = "pf:sse-ticket:"


class TicketView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=None,
        responses={
            201: inline_serializer(
                "EventsTicket", {"ticket": serializers.CharField(), "expires_in": serializers.IntegerField()}
            ),
            **error_responses(401),
        },
        tags=["events"],
        summary="A single-use ticket for GET events?ticket= (browsers' EventSource sends no headers)",
    )
    def post(self, request):
        ticket = secrets.token_urlsafe(32)
        cache.set(TICKET_PREFIX + ticket, request.user.pk, timeout=settings.EVENTS_TICKET_SECONDS)
        return Response({"ticket": ticket, "expires_in": settings.EVENTS_TICKET_SECONDS}, status=201)


def _error(status: int, code: str, detail: str) -> JsonResponse:
    response = JsonResponse({"code": code, "detail": detail}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = "Token"
    return response


def _redeem_ticket(ticket: str) -> int | None:
    key = TICKET_PREFIX + ticket
    user_id = cache.get(key)
    # Single use: only the request whose delete removed the key may use it.
    if user_id is None or not cache.delete(key):
        return None
    return user_id


def _token_user(key: str):
    token = Token.objects.select_related("user").filter(key=key).first()
    return token.user if token else None


def _authenticate_sync(request: HttpRequest):
    """(user, error response): token header, then ``?ticket=``, then the session."""
    from django.contrib.auth import get_user, get_user_model

    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "token" or not key.strip():
            return None, _error(401, "authentication_failed", "Use `Authorization: Token <key>`.")
        user = _token_user(key.strip())
        if user is None or not user.is_active:
            return None, _error(401, "authentication_failed", "Invalid token.")
        return user, None
    ticket = request.GET.get("ticket")
    if ticket is not None:
        user_id = _redeem_ticket(ticket[:200])
        user = get_user_model().objects.filter(pk=user_id, is_active=True).first() if user_id else None
        if user is None:
            return None, _error(401, "invalid_ticket", "The ticket is unknown, expired or already used.")
        return user, None
    user = get_user(request)
    if user.is_authenticated and user.is_active:
        return user, None
    return None, _error(401, "not_authenticated", "Authentication credentials were not provided.")


# Under ASGI, at most this many streams authenticate at once: a burst of reconnecting clients (a web
# process restarted) must not open more database connections than PostgreSQL takes.
AUTH_CONCURRENCY = 8
_auth_slots: asyncio.Semaphore | None = None


def _authenticate_and_release(request: HttpRequest):
    try:
        return _authenticate_sync(request)
    finally:
        # A stream lives for up to an hour and Django closes the request's database connection only
        # when the response ends: give it back now (ASGI: this request's own thread and connection).
        connections.close_all()


async def _authenticate(request: HttpRequest):
    global _auth_slots
    if not isinstance(request, ASGIRequest):
        return await sync_to_async(_authenticate_sync)(request)
    if _auth_slots is None:
        _auth_slots = asyncio.Semaphore(AUTH_CONCURRENCY)
    async with _auth_slots:
        user, error = await sync_to_async(_authenticate_and_release)(request)
    if user is not None:
        request.user = user  # the request log reads it: no session lookup (and connection) after this
    return user, error


PREAMBLE = b": postflow events\nretry: 3000\n\n"
HEARTBEAT = b": heartbeat\n\n"


async def _astream(log, user_id: int, after: str):
    """Events after ``after`` as SSE frames, a heartbeat comment when idle, for at most
    ``EVENTS_MAX_CONNECTION_SECONDS``. A log outage is waited out (the client keeps its connection)."""
    yield PREAMBLE
    deadline = time.monotonic() + settings.EVENTS_MAX_CONNECTION_SECONDS
    while time.monotonic() < deadline:
        try:
            batch = await log.aread(user_id, after, settings.EVENTS_HEARTBEAT_SECONDS)
        except Exception:
            await asyncio.sleep(1)
            yield HEARTBEAT
            continue
        if not batch:
            yield HEARTBEAT
            continue
        for event in batch:
            after = event.id
        yield b"".join(e.sse() for e in batch)


def _stream(log, user_id: int, after: str):
    """The same stream for WSGI servers (runserver, gunicorn sync/gthread): holds a thread."""
    yield PREAMBLE
    deadline = time.monotonic() + settings.EVENTS_MAX_CONNECTION_SECONDS
    while time.monotonic() < deadline:
        try:
            batch = log.read(user_id, after, settings.EVENTS_HEARTBEAT_SECONDS)
        except Exception:
            time.sleep(1)
            yield HEARTBEAT
            continue
        if not batch:
            yield HEARTBEAT
            continue
        after = batch[-1].id
        yield b"".join(e.sse() for e in batch)


async def events_stream(request: HttpRequest):
    """``GET /api/v1/events`` (DESIGN.md §10). Auth by token header, ``?ticket=`` or session.
    ``Last-Event-ID`` (header, or ``?last_event_id=``) resumes after that event; without it the
    stream starts with the next event. Under ASGI the stream is an async iterator (no thread per
    connection); under WSGI a generator."""
    if request.method != "GET":
        response = _error(405, "method_not_allowed", f'Method "{request.method}" not allowed.')
        response["Allow"] = "GET"
        return response
    user, error = await _authenticate(request)
    if error:
        return error
    log = events.get_log()
    last = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id") or ""
    if last and not events.valid_id(last):
        return _error(400, "invalid_last_event_id", "Last-Event-ID must be an id this stream sent.")
    if not last:
        try:
            if isinstance(log, events.RedisLog) and isinstance(request, ASGIRequest):
                last = await log.alatest_id(user.pk)
            else:
                last = await sync_to_async(log.latest_id)(user.pk)
        except Exception:
            response = _error(503, "events_unavailable", "The event log is unreachable; retry shortly.")
            response["Retry-After"] = "3"
            return response
    stream = _astream if isinstance(request, ASGIRequest) else _stream
    body = stream(log, user.pk, last)
    response = StreamingHttpResponse(body, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache, no-store"
    response["X-Accel-Buffering"] = "no"
    return response
