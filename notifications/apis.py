"""REST endpoints of the event stream: history, status, stream tickets and the staff test
trigger."""

from datetime import UTC, datetime

from django.db.models import BigIntegerField
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from notifications import selectors
from notifications.events import EventPayloadError, EventType, format_timestamp
from notifications.realtime.auth import kept_policy_claims
from notifications.realtime.presence import PresenceUnavailable, presence_count_for_user
from notifications.services import event_send_sample, stream_ticket_issue
from reasonflow.users.selectors import user_get_by_identifier


@extend_schema_serializer(component_name="EventEnvelope")
class EnvelopeSerializer(serializers.Serializer):
    """An event as the socket delivers it (PROTOCOL §2)."""

    id = serializers.IntegerField(help_text="The user's event id: 1, 2, 3, ... with no gaps.")
    type = serializers.ChoiceField(choices=[t.value for t in EventType])
    user_id = serializers.UUIDField()
    data = serializers.DictField(help_text="The payload of this event type (PROTOCOL §2).")
    timestamp = serializers.DateTimeField()


class EventListApi(APIView):
    """GET events?after=<id>&limit=<n>: the caller's kept events with a larger id."""

    MAX_LIMIT = 500

    class InputSerializer(serializers.Serializer):
        # Event ids are bigints: a larger `after` is a mistake the client should hear about.
        after = serializers.IntegerField(
            min_value=0, max_value=BigIntegerField.MAX_BIGINT, default=0
        )
        limit = serializers.IntegerField(min_value=1, max_value=500, default=100)

    @extend_schema_serializer(component_name="EventPage")
    class OutputSerializer(serializers.Serializer):
        events = EnvelopeSerializer(many=True)
        has_more = serializers.BooleanField(
            help_text="More kept events follow: ask again after the last id."
        )
        last_event_id = serializers.IntegerField(help_text="The user's newest event id.")

    @extend_schema(
        parameters=[InputSerializer],
        responses={
            200: OutputSerializer,
            400: OpenApiResponse(description="after or limit out of range"),
        },
    )
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

    @extend_schema_serializer(component_name="SampleEventInput")
    class InputSerializer(serializers.Serializer):
        user = serializers.CharField(max_length=254, help_text="The user's id or email.")
        type = serializers.ChoiceField(choices=[t.value for t in EventType])
        data = serializers.DictField(
            required=False, allow_null=True, help_text="The payload; a sample when omitted."
        )

        def validate_user(self, value: str):
            user = user_get_by_identifier(identifier=value)
            if user is None:
                raise serializers.ValidationError("No user with this id or email.")
            return user

    @extend_schema_serializer(component_name="SampleEventOutput")
    class OutputSerializer(serializers.Serializer):
        event = EnvelopeSerializer()

    @extend_schema(
        request=InputSerializer,
        responses={
            201: OutputSerializer,
            400: OpenApiResponse(description="unknown user or type, or data off the catalogue"),
            403: OpenApiResponse(description="staff only"),
        },
        examples=[
            OpenApiExample(
                "A sample draft_ready",
                value={"user": "demo@reasonflow.local", "type": "draft_ready"},
                request_only=True,
            ),
            OpenApiExample(
                "Given data",
                value={
                    "user": "demo@reasonflow.local",
                    "type": "email_received",
                    "data": {
                        "email_id": "0b7e6a4c-1f7d-4d55-9f4c-1f2e3d4c5b6a",
                        "subject": "Hello",
                        "sender": "Ada <ada@example.com>",
                    },
                },
                request_only=True,
            ),
        ],
    )
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

    @extend_schema_serializer(component_name="StreamStatus")
    class OutputSerializer(serializers.Serializer):
        user_id = serializers.UUIDField()
        connections = serializers.IntegerField(
            allow_null=True, help_text="Open sockets on every server process; null when unknown."
        )
        last_event_id = serializers.IntegerField()

    @extend_schema(responses={200: OutputSerializer})
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


class StreamTicketApi(APIView):
    """POST stream/ticket: a single-use ticket that opens the caller's event stream over
    server-sent events (PROTOCOL §5), for EventSource, which cannot send a Bearer header."""

    @extend_schema_serializer(component_name="StreamTicket")
    class OutputSerializer(serializers.Serializer):
        ticket = serializers.CharField(
            help_text="GET stream?ticket=<this>: opaque, single use, bound to the caller."
        )
        expires_at = serializers.DateTimeField(help_text="Unused, it is refused after this.")

    @extend_schema(request=None, responses={201: OutputSerializer})
    def post(self, request):
        token = request.auth
        ticket, expires_at = stream_ticket_issue(
            user_id=request.user.id,
            claims=kept_policy_claims(token),
            token_expires_at=datetime.fromtimestamp(token["exp"], tz=UTC),
        )
        return Response(
            {"ticket": ticket, "expires_at": format_timestamp(expires_at)},
            status=status.HTTP_201_CREATED,
        )
