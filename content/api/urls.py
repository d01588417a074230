from django.urls import path

from content.api import views

urlpatterns = [
    path("auth/register", views.RegisterView.as_view(), name="auth-register"),
    path("auth/token", views.TokenView.as_view(), name="auth-token"),
    path("content/posts", views.PostListCreateView.as_view(), name="post-list"),
    path("content/me/posts", views.MyPostsView.as_view(), name="my-posts"),
    path("content/posts/<uuid:post_id>", views.PostDetailView.as_view(), name="post-detail"),
    path("content/posts/<uuid:post_id>/publish", views.PublishView.as_view(), name="post-publish"),
    path("content/posts/<uuid:post_id>/unpublish", views.UnpublishView.as_view(), name="post-unpublish"),
    path("content/posts/<uuid:post_id>/revisions", views.RevisionsView.as_view(), name="post-revisions"),
    path("content/posts/<uuid:post_id>/poll/vote", views.PollVoteView.as_view(), name="poll-vote"),
    path("content/posts/<uuid:post_id>/report", views.ReportView.as_view(), name="post-report"),
]
