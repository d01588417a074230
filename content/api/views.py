"""Creators' REST API for accounts, posts, polls and reports: one view per operation; views parse
and render, services decide."""

from __future__ import annotations

from django.contrib.auth import authenticate, get_user_model, user_logged_in
from django.db import IntegrityError, transaction
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api import NewestFirstCursorPagination, error_responses
from config.errors import NotFound
from config.security import login_is_locked, login_locked_response
from config.throttles import ScopedRateThrottle
from content import selectors, services
from content.api.serializers import (
    USERNAME_TAKEN,
    PollOutSerializer,
    PostCreateSerializer,
    PostSerializer,
    PostUpdateSerializer,
    PublishSerializer,
    RegisteredSerializer,
    RegisterSerializer,
    ReportOutSerializer,
    ReportSerializer,
    RevisionSerializer,
    TokenRequestSerializer,
    TokenSerializer,
    VoteSerializer,
    poll_data,
)
from content.models import Post, PostStatus, PostType
from media.live.services import livestream_provision

User = get_user_model()


def _post_out(post_id, request) -> dict:
    post = selectors.posts_visible_to(request.user).get(pk=post_id)
    return PostSerializer(post, context={"request": request}).data


_E415 = "A body that is not JSON, multipart or a form (`unsupported_request_type`)."


class RegisterView(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "auth"

    @extend_schema(
        request=RegisterSerializer,
        responses={201: RegisteredSerializer, **error_responses(400, 415, 429, e415=_E415)},
        tags=["auth"],
        summary="Create a creator account",
    )
    def post(self, request):
        data = RegisterSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            with transaction.atomic():
                user = User.objects.create_user(
                    username=data.validated_data["username"],
                    password=data.validated_data["password"],
                    email=data.validated_data.get("email", ""),
                )
                token, _ = Token.objects.get_or_create(user=user)
        except IntegrityError:
            # Another registration took the name between the check and the insert: the same answer
            # as a name already taken.
            raise ValidationError({"username": [USERNAME_TAKEN]}) from None
        return Response({"id": user.pk, "username": user.username, "token": token.key}, status=201)


class TokenView(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "auth"

    @extend_schema(
        request=TokenRequestSerializer,
        responses={
            200: TokenSerializer,
            **error_responses(
                400,
                415,
                429,
                e415=_E415,
                e400="Wrong username or password (`invalid_credentials`).",
                e429="Too many requests (`throttled`), or too many failed logins for this account or "
                "address (`login_locked`, even with the right password); see `Retry-After`.",
            ),
        },
        tags=["auth"],
        summary="Get the API token",
    )
    def post(self, request):
        data = TokenRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        credentials = {k: data.validated_data[k] for k in ("username", "password")}
        # django-axes counts the failure and refuses a locked-out username or address (config.security).
        user = authenticate(request, **credentials)
        if login_is_locked(request):
            return login_locked_response(request, credentials=credentials)
        if user is None or not user.is_active:
            return Response(
                {"code": "invalid_credentials", "detail": "Wrong username or password."}, status=400
            )
        # What django.contrib.auth.login() sends: django-axes forgets this username's failures from
        # this address (AXES_RESET_ON_SUCCESS, config.logins) and logs the access; last_login is set.
        user_logged_in.send(sender=user.__class__, request=request, user=user)
        token, _ = Token.objects.get_or_create(user=user)
        return Response({"token": token.key})


class PostListCreateView(generics.GenericAPIView):
    serializer_class = PostSerializer
    pagination_class = NewestFirstCursorPagination

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "type", OpenApiTypes.STR, enum=PostType.values, description="Only posts of this type."
            ),
            OpenApiParameter("author", OpenApiTypes.STR, description="Author username or id."),
            OpenApiParameter("page_size", OpenApiTypes.INT, description="1–100, default 20."),
        ],
        responses={200: PostSerializer(many=True), **error_responses(400, 401)},
        tags=["posts"],
        summary="The published feed, newest first",
    )
    def get(self, request):
        type_ = request.query_params.get("type") or None
        if type_ and type_ not in PostType.values:
            raise ValidationError({"type": [f"Unknown type; use one of {', '.join(PostType.values)}."]})
        author = request.query_params.get("author") or None
        if author and "\x00" in author:  # PostgreSQL refuses NUL in text: bad input, not a 500
            raise ValidationError({"author": ["Null characters are not allowed."]})
        qs = selectors.post_feed(type=type_, author=author)
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(PostSerializer(page, many=True, context={"request": request}).data)

    @extend_schema(
        request=PostCreateSerializer,
        responses={
            201: PostSerializer,
            **error_responses(
                400,
                401,
                503,
                e503="A livestream post cannot be provisioned now (`livestream_unavailable`, with the "
                "reason: the local ingest is down, the provider refused).",
            ),
        },
        tags=["posts"],
        summary="Create a draft (a livestream post also provisions its stream)",
    )
    def post(self, request):
        data = PostCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        with transaction.atomic():
            post = services.post_create(author=request.user, **data.validated_data)
            if post.type == PostType.LIVESTREAM:
                livestream_provision(post)  # 503 livestream_unavailable rolls the post back
        return Response(_post_out(post.pk, request), status=201)


class MyPostsView(generics.GenericAPIView):
    permission_classes = [IsAuthenticated]
    serializer_class = PostSerializer
    pagination_class = NewestFirstCursorPagination

    @extend_schema(
        parameters=[OpenApiParameter("status", OpenApiTypes.STR, enum=PostStatus.values)],
        responses={200: PostSerializer(many=True), **error_responses(400, 401)},
        tags=["posts"],
        summary="The caller's posts in every status",
    )
    def get(self, request):
        status_ = request.query_params.get("status") or None
        if status_ and status_ not in PostStatus.values:
            raise ValidationError({"status": [f"Unknown status; use one of {', '.join(PostStatus.values)}."]})
        self.paginator.ordering = ("-created_at", "-id")
        page = self.paginate_queryset(selectors.posts_of(request.user, status=status_))
        return self.get_paginated_response(PostSerializer(page, many=True, context={"request": request}).data)


class PostDetailView(APIView):
    @extend_schema(
        responses={200: PostSerializer, **error_responses(401, 404)}, tags=["posts"], summary="Read a post"
    )
    def get(self, request, post_id):
        try:
            return Response(_post_out(post_id, request))
        except (Post.DoesNotExist, ValueError):
            raise NotFound("Post not found.") from None

    @extend_schema(
        request=PostUpdateSerializer,
        responses={200: PostSerializer, **error_responses(400, 401, 403, 404, 409)},
        tags=["posts"],
        summary="Edit a draft, or make a new revision of a published post",
        description="A draft changes in place. On a published post the edit becomes a new revision: "
        "public at once in `reactive_only`; in `ai_prescreen` the public keeps the last cleared revision "
        "while the new one (shown to the owner as `pending_revision`) is prescreened (DESIGN.md §9).",
    )
    def patch(self, request, post_id):
        data = PostUpdateSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        services.post_update(post_id=post_id, actor=request.user, **data.validated_data)
        return Response(_post_out(post_id, request))

    @extend_schema(
        responses={204: None, **error_responses(401, 403, 404)}, tags=["posts"], summary="Delete (soft)"
    )
    def delete(self, request, post_id):
        services.post_delete(post_id=post_id, actor=request.user)
        return Response(status=204)


class PublishView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=PublishSerializer,
        responses={
            200: OpenApiResponse(PostSerializer, description="Published."),
            202: OpenApiResponse(
                PostSerializer,
                description="Accepted: waiting for the AI prescreen (`pending_review`), for media "
                "processing (`publish_requested`), or for `publish_at` (`scheduled`).",
            ),
            **error_responses(
                400,
                401,
                403,
                404,
                409,
                e400="Bad input; `invalid_publish_at` when publish_at is not 1 minute – 1 year ahead.",
            ),
        },
        tags=["posts"],
        summary="Publish a draft, now or at `publish_at`",
    )
    def post(self, request, post_id):
        data = PublishSerializer(data=request.data or {})
        raw = data.initial_data.get("publish_at") if hasattr(data.initial_data, "get") else None
        if not data.is_valid():
            if "publish_at" in data.errors:
                raise services.InvalidPublishAt(
                    "publish_at must be an ISO 8601 time with a zone.", extra={"errors": data.errors}
                )
            raise ValidationError(data.errors)
        parsed = parse_datetime(raw) if isinstance(raw, str) else None
        if parsed is not None and parsed.tzinfo is None:
            raise services.InvalidPublishAt("publish_at needs a time zone (e.g. 2030-01-01T12:00:00Z).")
        post = services.post_publish(
            post_id=post_id, actor=request.user, publish_at=data.validated_data["publish_at"]
        )
        code = status.HTTP_200_OK if post.status == PostStatus.PUBLISHED else status.HTTP_202_ACCEPTED
        return Response(_post_out(post.pk, request), status=code)


class UnpublishView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=None,
        responses={200: PostSerializer, **error_responses(401, 403, 404, 409)},
        tags=["posts"],
        summary="Back to draft (cancels a scheduled publish)",
    )
    def post(self, request, post_id):
        post = services.post_unpublish(post_id=post_id, actor=request.user)
        return Response(_post_out(post.pk, request))


class PollVoteView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=VoteSerializer,
        responses={200: PollOutSerializer, **error_responses(400, 401, 404, 409)},
        tags=["polls"],
        summary="Vote; replaces the caller's earlier vote",
    )
    def post(self, request, post_id):
        data = VoteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        poll = services.poll_vote(
            post_id=post_id, user=request.user, option_ids=data.validated_data["option_ids"]
        )
        return Response(poll_data(poll, request.user))


class ReportView(APIView):
    permission_classes = [IsAuthenticated]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "reports"

    @extend_schema(
        request=ReportSerializer,
        responses={201: ReportOutSerializer, **error_responses(400, 401, 404, 409, 429)},
        tags=["posts"],
        summary="Report a published post",
    )
    def post(self, request, post_id):
        data = ReportSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        report = services.report_create(post_id=post_id, reporter=request.user, **data.validated_data)
        return Response(ReportOutSerializer(report).data, status=201)


class RevisionsView(APIView):
    @extend_schema(
        responses={200: RevisionSerializer(many=True), **error_responses(401, 404)},
        tags=["posts"],
        summary="A post's revision history, newest first",
        description="The owner and staff see every revision; anyone else only those that were public.",
    )
    def get(self, request, post_id):
        post = selectors.posts_visible_to(request.user).filter(pk=post_id).first()
        if post is None:
            raise NotFound("Post not found.")
        revisions = selectors.post_revisions_for(post, request.user)
        return Response(RevisionSerializer(revisions, many=True).data)
