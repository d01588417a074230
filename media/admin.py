"""Media and processing runs, read-only for operators and moderators (DESIGN.md §5)."""

from __future__ import annotations

import json

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from config.admin import ReadOnlyAdmin
from media.models import Media, ProcessorRun


def _json(value, limit: int = 2000) -> str:
    text = json.dumps(value, indent=1, sort_keys=True, default=str) if value not in (None, "", {}, []) else ""
    return text if len(text) <= limit else text[:limit] + "…"


def _ms(step: dict) -> float | None:
    value = step.get("duration_ms")
    return float(value) if isinstance(value, int | float) else None


@admin.register(Media)
class MediaAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "kind",
        "processing_status",
        "is_primary",
        "owner",
        "post_id",
        "mime_type",
        "size_bytes",
        "created_at",
    )
    list_filter = ("kind", "processing_status", "is_primary")
    search_fields = ("=id", "=sha256", "owner__username", "=post__id")
    list_select_related = ("owner",)
    show_full_result_count = False
    fields = (
        "id",
        "runs_link",
        "post_link",
        "owner",
        "parent",
        "kind",
        "is_primary",
        "position",
        "processing_status",
        "processing_error",
        "original_filename",
        "mime_type",
        "size_bytes",
        "sha256",
        "width",
        "height",
        "duration_seconds",
        "blurhash",
        "variants_pretty",
        "metadata_pretty",
        "attempts",
        "processing_started_at",
        "processed_at",
        "created_at",
        "updated_at",
        "detached_at",
        "purged_at",
    )
    readonly_fields = fields

    @admin.display(description="processing runs")
    def runs_link(self, media):
        url = reverse("admin:media_processorrun_changelist") + f"?media__id__exact={media.pk}"
        return format_html('<a href="{}">{} run(s)</a>', url, media.runs.count())

    @admin.display(description="post")
    def post_link(self, media):
        if not media.post_id:
            return "—"
        url = reverse("admin:moderation_reviewqueue_change", args=[media.post_id])
        return format_html('<a href="{}">{}</a>', url, media.post_id)

    @admin.display(description="variants")
    def variants_pretty(self, media):
        return format_html("<pre>{}</pre>", _json(media.variants, 8000))

    @admin.display(description="metadata")
    def metadata_pretty(self, media):
        return format_html("<pre>{}</pre>", _json(media.metadata, 8000))


@admin.register(ProcessorRun)
class ProcessorRunAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "started_at",
        "processor",
        "media_kind",
        "result",
        "attempt",
        "duration_ms",
        "status_before",
        "status_after",
        "error_class",
    )
    list_filter = ("result", "processor", "media__kind")
    search_fields = ("=media__id", "=message_id", "error_message")
    list_select_related = ("media",)
    date_hierarchy = "started_at"
    show_full_result_count = False
    fields = (
        "media_link",
        "post",
        "owner",
        "processor",
        "processor_class",
        "actor",
        "queue",
        "message_id",
        "attempt",
        "status_before",
        "status_after",
        "result",
        "duration_ms",
        "peak_memory_kb",
        "error_class",
        "error_message",
        "started_at",
        "completed_at",
        "steps_timeline",
    )
    readonly_fields = fields

    class Media:
        css = {"all": ["admin/postflow/postflow.css"]}

    @admin.display(description="media kind", ordering="media__kind")
    def media_kind(self, run):
        return run.media.get_kind_display()

    @admin.display(description="media")
    def media_link(self, run):
        url = reverse("admin:media_media_change", args=[run.media_id])
        return format_html('<a href="{}">{}</a>', url, run.media_id)

    @admin.display(description="steps")
    def steps_timeline(self, run):
        steps = [s for s in (run.steps or []) if isinstance(s, dict)]
        if not steps:
            return "—"
        longest = max((_ms(s) or 0 for s in steps), default=0) or 1
        rows = format_html_join(
            "",
            '<tr class="pf-step-{}"><td>{}</td><td>{}</td><td>{}</td>'
            '<td><div class="pf-bar" style="width:{}px"></div></td>'
            "<td><pre>{}</pre></td><td><pre>{}</pre></td><td>{}</td></tr>",
            (
                (
                    s.get("status", ""),
                    s.get("name", ""),
                    s.get("status", ""),
                    f"{_ms(s):.0f} ms" if _ms(s) is not None else "",
                    round(200 * (_ms(s) or 0) / longest),
                    _json(s.get("input")),
                    _json(s.get("output")),
                    s.get("error") or "",
                )
                for s in steps
            ),
        )
        return format_html(
            '<table class="pf-steps"><thead><tr><th>Step</th><th>Status</th><th>Duration</th><th></th>'
            "<th>Input</th><th>Output</th><th>Error</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )
