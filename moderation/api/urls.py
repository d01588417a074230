from django.urls import path

from moderation.api import views

urlpatterns = [
    path("content/posts/<uuid:post_id>/appeal", views.AppealView.as_view(), name="post-appeal"),
]
