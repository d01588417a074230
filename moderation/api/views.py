"""The creator's side of appeals (DESIGN.md §10): ``POST/GET content/posts/{id}/appeal``. The
moderators' side is the Appeals queue in ``moderation.admin``; both go through ``moderation.services``."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api import JSONParser, error_responses
from config.errors import NotFound
from moderation import services
from moderation.models import Appeal


class AppealInSerializer(serializers.Serializer):
    text = serializers.CharField(max_length=services.APPEAL_MAX_CHARS, trim_whitespace=True)


class AppealSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    post_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=["open", "granted", "denied"])
    text = serializers.CharField()
    appealed_decision = serializers.DictField(help_text="{source: human|ai, action, reason, decided_at}")
    decision_reason = serializers.CharField(help_text="The moderator's answer (empty while open).")
    decided_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()


def appeal_data(appeal: Appeal) -> dict:
    if appeal.decision_id:
        d = appeal.decision
        original = {"source": "human", "action": d.action, "reason": d.reason, "decided_at": d.created_at}
    else:
        r = appeal.ai_review
        original = {
            "source": "ai",
            "action": "quarantine",
            "reason": ", ".join(r.labels or []),
            "decided_at": r.created_at,
        }
    return {
        "id": appeal.pk,
        "post_id": str(appeal.post_id),
        "status": appeal.status,
        "text": appeal.text,
        "appealed_decision": original,
        "decision_reason": appeal.decision_reason,
        "decided_at": appeal.decided_at,
        "created_at": appeal.created_at,
    }


class AppealView(APIView):
    permission_classes = [IsAuthenticated]
    parser_classes = [JSONParser]

    @extend_schema(
        request=AppealInSerializer,
        responses={
            201: AppealSerializer,
            **error_responses(
                400,
                401,
                403,
                404,
                409,
                415,
                e409="Nothing to appeal (`appeal_not_allowed`), too late (`appeal_window_closed`, "
                f"{settings.APPEAL_WINDOW_DAYS} days), or already appealed (`already_appealed`).",
            ),
        },
        tags=["posts"],
        summary="Appeal the post's reject or quarantine decision",
    )
    def post(self, request, post_id):
        data = AppealInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        appeal = services.appeal_create(
            post_id=post_id, author=request.user, text=data.validated_data["text"]
        )
        appeal = Appeal.objects.select_related("decision", "ai_review").get(pk=appeal.pk)
        return Response(AppealSerializer(appeal_data(appeal)).data, status=201)

    @extend_schema(
        responses={200: AppealSerializer, **error_responses(401, 404)},
        tags=["posts"],
        summary="The post's latest appeal and its answer",
    )
    def get(self, request, post_id):
        appeal = (
            Appeal.objects.select_related("decision", "ai_review")
            .filter(post_id=post_id, author=request.user, post__deleted_at__isnull=True)
            .order_by("-created_at", "-pk")
            .first()
        )
        if appeal is None:
            raise NotFound("This post has no appeal.")
        return Response(AppealSerializer(appeal_data(appeal)).data)
