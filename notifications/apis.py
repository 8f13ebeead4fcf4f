"""REST endpoints of the event stream: history, status and the staff test trigger."""

from django.db.models import BigIntegerField
from rest_framework import serializers, status
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from notifications import selectors
from notifications.events import EventPayloadError, EventType
from notifications.realtime.presence import PresenceUnavailable, presence_count_for_user
from notifications.services import event_send_sample
from reasonflow.users.selectors import user_get_by_identifier


class EventListApi(APIView):
    """GET events?after=<id>&limit=<n>: the caller's kept events with a larger id."""

    MAX_LIMIT = 500

    class InputSerializer(serializers.Serializer):
        # Event ids are bigints: a larger `after` is a mistake the client should hear about.
        after = serializers.IntegerField(
            min_value=0, max_value=BigIntegerField.MAX_BIGINT, default=0
        )
        limit = serializers.IntegerField(min_value=1, max_value=500, default=100)

    def get(self, request):
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        after, limit = params.validated_data["after"], params.validated_data["limit"]
        events = selectors.event_list_for_user(
            user_id=request.user.id, after=after, limit=limit + 1
        )
        return Response(
            {
                "events": [event.envelope() for event in events[:limit]],
                "has_more": len(events) > limit,
                "last_event_id": selectors.event_last_id_for_user(user_id=request.user.id),
            }
        )


class SampleEventApi(APIView):
    """POST test: staff only; publish a sample (or the given) event to a user."""

    permission_classes = [IsAdminUser]

    class InputSerializer(serializers.Serializer):
        user = serializers.CharField(max_length=254)
        type = serializers.ChoiceField(choices=[t.value for t in EventType])
        data = serializers.DictField(required=False, allow_null=True)

        def validate_user(self, value: str):
            user = user_get_by_identifier(identifier=value)
            if user is None:
                raise serializers.ValidationError("No user with this id or email.")
            return user

    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        values = serializer.validated_data
        try:
            event = event_send_sample(
                user_id=values["user"].id, event_type=values["type"], data=values.get("data")
            )
        except EventPayloadError as exc:
            return Response({"data": [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
        return Response({"event": event.envelope()}, status=status.HTTP_201_CREATED)


class StatusApi(APIView):
    """GET status: the caller's open sockets across all server processes and newest event id."""

    def get(self, request):
        try:
            connections = presence_count_for_user(user_id=request.user.id)
        except PresenceUnavailable:
            connections = None  # Redis is down; the event history still answers
        return Response(
            {
                "user_id": str(request.user.id),
                "connections": connections,
                "last_event_id": selectors.event_last_id_for_user(user_id=request.user.id),
            }
        )
