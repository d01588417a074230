from django.urls import path

from media.api import views

urlpatterns = [
    path("content/uploads", views.UploadCreateView.as_view(), name="upload-create"),
    path("content/uploads/<uuid:upload_id>/data", views.upload_data, name="upload-data"),
    path("content/posts/<uuid:post_id>/media", views.AttachView.as_view(), name="media-attach"),
    path(
        "content/posts/<uuid:post_id>/media/<uuid:media_id>", views.DetachView.as_view(), name="media-detach"
    ),
    path("content/media/<uuid:media_id>", views.MediaDetailView.as_view(), name="media-detail"),
    path("content/me/quota", views.QuotaView.as_view(), name="my-quota"),
    path("content/media/<uuid:media_id>/retry", views.MediaRetryView.as_view(), name="media-retry"),
]
