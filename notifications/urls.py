"""/api/v1/notifications/ routes (the socket and the event stream: realtime/routing.py)."""

from django.urls import re_path

from notifications.apis import (
    EventListApi,
    PublishApi,
    SampleEventApi,
    StatusApi,
    StreamTicketApi,
)

urlpatterns = [
    re_path(r"^events/?$", EventListApi.as_view(), name="notifications-events"),
    re_path(r"^test/?$", SampleEventApi.as_view(), name="notifications-test"),
    re_path(r"^stream/ticket/?$", StreamTicketApi.as_view(), name="notifications-stream-ticket"),
    re_path(r"^status/?$", StatusApi.as_view(), name="notifications-status"),
    re_path(r"^publish/?$", PublishApi.as_view(), name="notifications-publish"),
]
