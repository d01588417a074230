from django.urls import path

from content.api import live, views

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
    path("content/notifications", live.NotificationListView.as_view(), name="notification-list"),
    path("content/notifications/read", live.NotificationReadView.as_view(), name="notification-read"),
    path("content/notifications/preferences", live.PreferencesView.as_view(), name="notification-prefs"),
    path("content/webhooks", live.WebhookListCreateView.as_view(), name="webhook-list"),
    path("content/webhooks/<uuid:webhook_id>", live.WebhookDetailView.as_view(), name="webhook-detail"),
    path(
        "content/webhooks/<uuid:webhook_id>/deliveries",
        live.WebhookDeliveriesView.as_view(),
        name="webhook-deliveries",
    ),
    path("events", live.events_stream, name="events"),
    path("events/ticket", live.TicketView.as_view(), name="events-ticket"),
]
