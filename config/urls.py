from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.health import healthz, livez, readyz
from config.observability import metrics
from media.api.live import live_tree, watch_page
from media.api.views import media_file, media_tree

api = [
    path("", include("content.api.urls")),
    path("", include("media.api.urls")),
    path("", include("moderation.api.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]

urlpatterns = [
    path("api/v1/", include(api)),
    path("m/<str:token>", media_file, name="media-file"),
    path("m/h/<str:token>/<path:path>", media_tree, name="media-tree"),
    path("m/l/<str:token>/<path:path>", live_tree, name="live-tree"),
    path("watch/<uuid:post_id>", watch_page, name="watch"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("livez", livez, name="livez"),
    path("metrics", metrics, name="metrics"),
    path("admin/", admin.site.urls),
]

handler404 = "config.views.not_found"
handler500 = "config.views.server_error"
handler400 = "config.views.bad_request"
handler403 = "config.views.permission_denied"
