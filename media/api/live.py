"""Livestream endpoints (DESIGN.md §13): end a stream, rotate its key, the Mux webhook, and the
signed live HLS folder (``/m/l/<token>/<path>``)."""

from __future__ import annotations

import posixpath

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.templatetags.static import static
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api import error_body, error_responses
from config.parsers import JSONParser
from content import selectors
from content.api.serializers import PostSerializer
from content.models import PostStatus
from content.services import is_owner_or_staff
from media import storage
from media.api.serving import HLS_TYPES, allow_methods, request_user, serve_object
from media.live import services
from media.live.models import LiveStream
from media.live.providers import LiveProviderError
from media.live.providers.mux import verify_webhook
from media.live.webhooks import mux_event

_E503 = "The livestream provider cannot be reached (`livestream_unavailable`)."


def _post_out(post_id, request) -> dict:
    post = selectors.posts_visible_to(request.user).get(pk=post_id)
    return PostSerializer(post, context={"request": request}).data


class EndSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class LivestreamEndView(APIView):
    permission_classes = [IsAuthenticated]
    parser_classes = [JSONParser]

    @extend_schema(
        request=EndSerializer,
        responses={200: PostSerializer, **error_responses(400, 401, 403, 404, 409)},
        tags=["livestreams"],
        summary="End the livestream (author or moderator); its recording follows",
    )
    def post(self, request, post_id):
        data = EndSerializer(data=request.data or {})
        data.is_valid(raise_exception=True)
        services.livestream_end(post_id=post_id, actor=request.user, reason=data.validated_data["reason"])
        return Response(_post_out(post_id, request))


class LivestreamKeyView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=None,
        responses={200: PostSerializer, **error_responses(401, 403, 404, 409, 503, e503=_E503)},
        tags=["livestreams"],
        summary="Rotate the stream key (the old one is refused from now on)",
    )
    def post(self, request, post_id):
        services.livestream_rotate_key(post_id=post_id, actor=request.user)
        return Response(_post_out(post_id, request))


class MuxWebhookView(APIView):
    """Mux's webhooks (``video.live_stream.active`` / ``idle`` / ``disconnected``, ``video.asset.ready``
    …), verified with the ``Mux-Signature`` header (t=<unix time>,v1=<HMAC-SHA256 hex of "t.body">)."""

    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(
        request=None,
        responses={
            204: None,
            **error_responses(400, e400="A body or signature that does not verify (`invalid_signature`)."),
        },
        tags=["livestreams"],
        summary="Mux webhook receiver (signed)",
    )
    def post(self, request):
        body = request.body
        if not verify_webhook(body, request.headers.get("Mux-Signature", "")):
            return Response(error_body("invalid_signature", "The Mux-Signature does not verify."), status=400)
        try:
            mux_event(body)
        except (ValueError, LiveProviderError) as exc:
            return Response(error_body("invalid_event", str(exc)), status=400)
        return Response(status=204)


@csrf_exempt  # GET and HEAD only: any other method is a JSON 405, not a CSRF page
@extend_schema(exclude=True)
@allow_methods("GET", "HEAD")
def live_tree(request: HttpRequest, token: str, path: str) -> HttpResponse:
    """Serve one object of a stream's live HLS tree under ``/m/l/<token>/<path>``: the token grants
    the folder that is the stream's current ``hls_folder``; the stream's post must be visible to the
    viewer now (published: everyone; otherwise its owner and staff, by session or token). Playlists
    change while live: ``private, no-store``; segments never change: cached like published media."""
    signed = storage.verify_prefix_token(token)
    if signed is None:
        return JsonResponse(
            error_body("invalid_signature", "This media URL is invalid or has expired."), status=403
        )
    try:
        key = storage.clean_key(f"{signed.folder}/{path}")
    except storage.InvalidKey:
        raise Http404 from None
    stream = LiveStream.objects.select_related("post").filter(pk=signed.media_id).first()
    if stream is None or stream.post.deleted_at is not None or stream.hls_folder != signed.folder:
        raise Http404
    published = stream.post.status == PostStatus.PUBLISHED
    if not published and not is_owner_or_staff(request_user(request), stream.owner_id):
        raise Http404
    ext = posixpath.splitext(key)[1].lower()
    mime = HLS_TYPES.get(ext)
    if mime is None:
        raise Http404
    return serve_object(
        request,
        key=key,
        mime_type=mime,
        filename=posixpath.basename(key),
        public=published and ext != ".m3u8",
        expires=signed.expires,
    )


WATCH_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Postflow live</title>
<style>body{font:16px system-ui,sans-serif;max-width:960px;margin:1em auto;padding:0 1em}
video{width:100%;background:#000}</style></head><body>
<h1 id="title">Livestream</h1><p id="state">Loading…</p>
<video id="v" controls muted playsinline></video>
<script src="__HLS__"></script>
<script>
(function () {
  var post = "__POST__", v = document.getElementById("v"), hls = null, playing = null;
  function play(src) {
    if (!src || src === playing) return;
    playing = src;
    if (window.Hls && Hls.isSupported()) {
      if (hls) hls.destroy();
      hls = new Hls(); window.pfHls = hls; hls.loadSource(src); hls.attachMedia(v);
      hls.on(Hls.Events.MANIFEST_PARSED, function () { v.play().catch(function () {}); });
    } else { v.src = src; }
  }
  function poll() {
    fetch("/api/v1/content/posts/" + post, {credentials: "same-origin"}).then(function (r) {
      if (!r.ok) { document.getElementById("state").textContent = "Not found."; return null; }
      return r.json();
    }).then(function (p) {
      if (!p) return;
      var ls = p.livestream || {}, rec = (p.media || []).filter(function (m) {
        return m.kind === "livestream_recording" && m.processing_status === "ready"; })[0];
      document.getElementById("title").textContent = p.title;
      document.getElementById("state").textContent = "Stream: " + (ls.status || "none") +
        (rec ? " — recording ready" : "") + (ls.ingest_url ? " — send to " + ls.ingest_url : "");
      if (ls.status === "live") play(ls.playback_url);
      else if (rec && rec.variants.hls) play(rec.variants.hls.url);
      else if (ls.playback_url) play(ls.playback_url);
    }).finally(function () { setTimeout(poll, 3000); });
  }
  poll();
})();
</script></body></html>"""


@extend_schema(exclude=True)
@allow_methods("GET", "HEAD")
def watch_page(request: HttpRequest, post_id) -> HttpResponse:
    """A minimal player page for a livestream post (``/watch/<post id>``): it reads the Post JSON with
    the viewer's own session (so it shows exactly what the API would show them) and plays the live
    HLS, or the recording once it is ready. It holds no data itself: visibility is the API's."""
    html = WATCH_PAGE.replace("__HLS__", static("vendor/hls.min.js")).replace("__POST__", str(post_id))
    response = HttpResponse(html, content_type="text/html; charset=utf-8")
    response["Cache-Control"] = "no-store"
    return response
