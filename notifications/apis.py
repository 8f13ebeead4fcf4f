"""REST endpoints of the event stream: history, status, stream tickets, the staff test trigger,
and the publish API of other services."""

import hashlib
import json
from datetime import UTC, datetime

from django.db.models import BigIntegerField
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from notifications import selectors
from notifications.events import EventPayloadError, EventType, build_payload, format_timestamp
from notifications.realtime.auth import kept_policy_claims
from notifications.realtime.presence import PresenceUnavailable, presence_count_for_user
from notifications.service_keys import (
    HasServiceKey,
    ServiceKeyAuthentication,
    ServiceKeyRateThrottle,
)
from notifications.services import (
    MAX_PUBLISH_EVENTS,
    EventTypesRefused,
    IdempotencyKeyReused,
    Published,
    PublishItem,
    event_send_sample,
    events_publish_for_service,
    publish_receipt_repeat,
    stream_ticket_issue,
)
from reasonflow.api import BoundedListField, Serializer
from reasonflow.users.selectors import user_get_by_identifier, user_ids_by_identifier


@extend_schema_serializer(component_name="EventEnvelope")
class EnvelopeSerializer(Serializer):
    """An event as the socket delivers it (PROTOCOL §2)."""

    id = serializers.IntegerField(help_text="The user's event id: 1, 2, 3, ... with no gaps.")
    type = serializers.ChoiceField(choices=[t.value for t in EventType])
    user_id = serializers.UUIDField()
    data = serializers.DictField(help_text="The payload of this event type (PROTOCOL §2).")
    timestamp = serializers.DateTimeField()


class EventListApi(APIView):
    """GET events?after=<id>&limit=<n>: the caller's kept events with a larger id."""

    MAX_LIMIT = 500

    class InputSerializer(Serializer):
        # Event ids are bigints: a larger `after` is a mistake the client should hear about.
        after = serializers.IntegerField(
            min_value=0, max_value=BigIntegerField.MAX_BIGINT, default=0
        )
        limit = serializers.IntegerField(min_value=1, max_value=500, default=100)

    @extend_schema_serializer(component_name="EventPage")
    class OutputSerializer(Serializer):
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
    class InputSerializer(Serializer):
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
    class OutputSerializer(Serializer):
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
    class OutputSerializer(Serializer):
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


@extend_schema_serializer(component_name="PublishEvent")
class PublishEventSerializer(Serializer):
    """One event of the publish API, checked against the catalogue."""

    user = serializers.CharField(max_length=254, help_text="The user's id or email.")
    type = serializers.ChoiceField(choices=[t.value for t in EventType])
    data = serializers.DictField(help_text="The payload of this event type (PROTOCOL §2).")

    def validate(self, attrs):
        try:
            attrs["data"] = build_payload(attrs["type"], attrs["data"])
        except EventPayloadError as exc:
            raise serializers.ValidationError({"data": [str(exc)]}) from None
        return attrs


class PublishApi(APIView):
    """POST publish: another service publishes one event or a batch, with a service key
    (PROTOCOL §6). All or nothing, in the order given; an Idempotency-Key makes retries safe."""

    authentication_classes = [ServiceKeyAuthentication]
    permission_classes = [HasServiceKey]
    throttle_classes = [ServiceKeyRateThrottle]
    MAX_IDEMPOTENCY_KEY = 255

    @classmethod
    def is_idempotency_key(cls, value: str) -> bool:
        # Printable ASCII only: what HTTP clients send, and nothing PostgreSQL's text refuses
        # (a NUL byte) or that compares differently once normalised.
        return 0 < len(value) <= cls.MAX_IDEMPOTENCY_KEY and all(
            " " <= char <= "~" for char in value
        )

    @extend_schema_serializer(component_name="PublishBatch")
    class BatchSerializer(Serializer):
        events = BoundedListField(
            child=PublishEventSerializer(),
            max_length=MAX_PUBLISH_EVENTS,
            min_length=1,
            help_text=f"1 to {MAX_PUBLISH_EVENTS}.",
        )

    @extend_schema_serializer(component_name="PublishOutput")
    class OutputSerializer(Serializer):
        events = EnvelopeSerializer(many=True, help_text="The published events, in order.")

    @extend_schema(
        summary="Publish events from another service",
        description=(
            'One event, or `{"events": [...]}` of 1 to 500, published exactly as the '
            "server's own `publish_event`: stored with the user's next ids, delivered after "
            "the commit, all or none, in the order given. Authenticate with a service key "
            "(`Authorization: Bearer rfk_...`), never a user's access token. A 400 names the "
            "field; in a batch, under `events` and the event's index, e.g. "
            '`{"events": {"2": {"data": ["..."]}}}`.'
        ),
        request=PolymorphicProxySerializer(
            component_name="PublishRequest",
            serializers=[PublishEventSerializer, BatchSerializer],
            resource_type_field_name=None,
        ),
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                location=OpenApiParameter.HEADER,
                required=False,
                description=(
                    "1 to 255 characters. A repeat with the same key and body within 24 h "
                    "answers the first response (header `Idempotent-Replayed: true`) and "
                    "publishes nothing; the same key with another body is a 422."
                ),
            )
        ],
        responses={
            201: OutputSerializer,
            400: OpenApiResponse(description="a field off the catalogue, an unknown user"),
            401: OpenApiResponse(description="no, an unknown or a revoked service key"),
            403: OpenApiResponse(description="a type this key may not publish"),
            413: OpenApiResponse(description="over 500 events or over 1 MiB"),
            422: OpenApiResponse(description="the Idempotency-Key came with another body"),
            429: OpenApiResponse(description="over the key's rate (NOTIFICATIONS_PUBLISH_RATE)"),
        },
        examples=[
            OpenApiExample(
                "One event",
                value={
                    "user": "demo@reasonflow.local",
                    "type": "draft_ready",
                    "data": {
                        "draft_id": "5f0c1e4e-9a53-4a0e-8f55-0d8b7f1f2a10",
                        "email_id": "0b7e6a4c-1f7d-4d55-9f4c-1f2e3d4c5b6a",
                        "requires_approval": True,
                    },
                },
                request_only=True,
            ),
            OpenApiExample(
                "A batch",
                value={
                    "events": [
                        {
                            "user": "demo@reasonflow.local",
                            "type": "email_classified",
                            "data": {
                                "email_id": "0b7e6a4c-1f7d-4d55-9f4c-1f2e3d4c5b6a",
                                "classification": "meeting_request",
                                "confidence": 0.93,
                            },
                        },
                        {
                            "user": "3bbbf93a-6c1e-4d8e-9a51-2f0b6f9f8c11",
                            "type": "batch_progress",
                            "data": {
                                "job_id": "9d4c2b1a-0e6f-4a3b-8c7d-6e5f4a3b2c1d",
                                "processed": 10,
                                "total": 40,
                                "percentage": 25,
                            },
                        },
                    ]
                },
                request_only=True,
            ),
            OpenApiExample(
                "Published",
                value={
                    "events": [
                        {
                            "id": 42,
                            "type": "draft_ready",
                            "user_id": "3bbbf93a-6c1e-4d8e-9a51-2f0b6f9f8c11",
                            "data": {
                                "draft_id": "5f0c1e4e-9a53-4a0e-8f55-0d8b7f1f2a10",
                                "email_id": "0b7e6a4c-1f7d-4d55-9f4c-1f2e3d4c5b6a",
                                "requires_approval": True,
                            },
                            "timestamp": "2026-02-19T10:30:00.123456+00:00",
                        }
                    ]
                },
                response_only=True,
                status_codes=["201"],
            ),
        ],
    )
    def post(self, request):
        body, batch = request.data, isinstance(request.data, dict) and "events" in request.data
        if batch and isinstance(body["events"], list) and len(body["events"]) > MAX_PUBLISH_EVENTS:
            return Response(
                {"detail": f"Too many events: at most {MAX_PUBLISH_EVENTS} per request."},
                status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            )
        idempotency_key = request.headers.get("Idempotency-Key")
        if idempotency_key is not None and not self.is_idempotency_key(idempotency_key):
            return Response(
                {
                    "Idempotency-Key": [
                        f"From 1 to {self.MAX_IDEMPOTENCY_KEY} printable ASCII characters."
                    ]
                },
                status=status.HTTP_400_BAD_REQUEST,
            )
        key, body_hash = request.auth, _body_hash(body)
        try:
            if idempotency_key is not None:
                repeat = publish_receipt_repeat(
                    key=key, idempotency_key=idempotency_key, body_hash=body_hash
                )
                if repeat is not None:
                    return self._answer(repeat)
            published = events_publish_for_service(
                key=key,
                items=self._items(body, batch=batch),
                idempotency_key=idempotency_key,
                body_hash=body_hash,
            )
        except EventTypesRefused as exc:
            return Response(
                {"detail": f"This service key may not publish {', '.join(exc.types)}."},
                status=status.HTTP_403_FORBIDDEN,
            )
        except IdempotencyKeyReused:
            return Response(
                {"detail": "This Idempotency-Key was used with another body in the last 24 hours."},
                status=status.HTTP_422_UNPROCESSABLE_ENTITY,
            )
        return self._answer(published)

    def _items(self, body, *, batch: bool) -> list[PublishItem]:
        """The events of `body`, validated against the catalogue and with their users looked
        up; a ValidationError names the field, under `events` and the index in a batch."""
        if batch:
            serializer = self.BatchSerializer(data=body)
            serializer.is_valid(raise_exception=True)
            events = serializer.validated_data["events"]
        else:
            serializer = PublishEventSerializer(data=body)
            serializer.is_valid(raise_exception=True)
            events = [serializer.validated_data]
        users = user_ids_by_identifier(identifiers=[event["user"] for event in events])
        unknown = {
            index: {"user": ["No user with this id or email."]}
            for index, event in enumerate(events)
            if event["user"] not in users
        }
        if unknown:
            first = dict(list(unknown.items())[: BoundedListField.max_errors])
            raise serializers.ValidationError({"events": first} if batch else unknown[0])
        return [PublishItem(users[e["user"]], e["type"], e["data"]) for e in events]

    @staticmethod
    def _answer(published: Published) -> Response:
        response = Response({"events": published.envelopes}, status=status.HTTP_201_CREATED)
        if published.repeated:
            response["Idempotent-Replayed"] = "true"
        return response


def _body_hash(body) -> str:
    """The request body's fingerprint, whatever its key order and spacing."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class StreamTicketApi(APIView):
    """POST stream/ticket: a single-use ticket that opens the caller's event stream over
    server-sent events (PROTOCOL §5), for EventSource, which cannot send a Bearer header."""

    @extend_schema_serializer(component_name="StreamTicket")
    class OutputSerializer(Serializer):
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
