from django.urls import path

from media.api import live, views

urlpatterns = [
    path("content/uploads", views.UploadCreateView.as_view(), name="upload-create"),
    path("content/uploads/<uuid:upload_id>/data", views.upload_data, name="upload-data"),
    path("content/uploads/<uuid:upload_id>", views.UploadDetailView.as_view(), name="upload-detail"),
    path("content/uploads/<uuid:upload_id>/parts", views.UploadPartsView.as_view(), name="upload-parts"),
    path(
        "content/uploads/<uuid:upload_id>/parts/<int:part_number>/data",
        views.upload_part_data,
        name="upload-part-data",
    ),
    path(
        "content/uploads/<uuid:upload_id>/complete",
        views.UploadCompleteView.as_view(),
        name="upload-complete",
    ),
    path("content/posts/<uuid:post_id>/media", views.AttachView.as_view(), name="media-attach"),
    path(
        "content/posts/<uuid:post_id>/media/<uuid:media_id>", views.DetachView.as_view(), name="media-detach"
    ),
    path("content/media/<uuid:media_id>", views.MediaDetailView.as_view(), name="media-detail"),
    path("content/me/quota", views.QuotaView.as_view(), name="my-quota"),
    path("content/media/<uuid:media_id>/retry", views.MediaRetryView.as_view(), name="media-retry"),
    path(
        "content/posts/<uuid:post_id>/livestream/end", live.LivestreamEndView.as_view(), name="livestream-end"
    ),
    path(
        "content/posts/<uuid:post_id>/livestream/key", live.LivestreamKeyView.as_view(), name="livestream-key"
    ),
    path("live/mux/webhook", live.MuxWebhookView.as_view(), name="livestream-mux-webhook"),
]
