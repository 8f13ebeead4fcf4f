"""The REST plumbing of every endpoint (reasonflow/api.py), through APIClient: bodies that
cannot be parsed, are nested too deeply, hold what the database cannot store, or are too large
get a 4xx with a small JSON body, never a 500."""

import io
import json
import uuid
import zoneinfo
from datetime import UTC, datetime, timedelta
from datetime import timezone as fixed_offset

import pytest
from django.test import override_settings
from django.urls import path as route
from django.utils import timezone
from rest_framework import serializers
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.test import APIClient
from rest_framework.utils.encoders import JSONEncoder as DRFJSONEncoder
from rest_framework.views import APIView

from emails.apis import (
    BatchJobOutputSerializer,
    DraftOutputSerializer,
    EmailDetailOutputSerializer,
    EmailOutputSerializer,
)
from emails.models import BatchJob, Draft, Email
from notifications.models import Event
from reasonflow.api import UTCDateTimeField
from reasonflow.parsers import JSONParser
from reasonflow.users.models import User
from tests.conftest import access_token_for
from tests.emails.factories import DraftFactory, EmailFactory

pytestmark = pytest.mark.django_db


def client_for(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token_for(user)}")
    return client


@pytest.fixture
def staff(make_user):
    return make_user(is_staff=True)


@pytest.fixture
def write_endpoints(staff):
    """Every endpoint that reads a request body: (method, path, needs the staff token)."""
    draft = DraftFactory(email__owner=staff)
    return [
        ("post", "/api/v1/auth/register", False),
        ("post", "/api/v1/auth/login", False),
        ("post", "/api/v1/auth/refresh", False),
        ("post", "/api/v1/auth/logout", True),
        ("post", "/api/v1/auth/password", True),
        ("patch", f"/api/v1/emails/{draft.email_id}", True),
        ("patch", f"/api/v1/drafts/{draft.id}", True),
        ("post", f"/api/v1/drafts/{draft.id}/reject", True),
        ("post", "/api/v1/emails/batch/classify", True),
        ("post", "/api/v1/emails/batch/process", True),
        ("post", "/api/v1/notifications/test", True),
    ]


def send(client: APIClient, method: str, path: str, body: bytes | str):
    return client.generic(method.upper(), path, body, content_type="application/json")


DEEP_BODIES = {
    "lists-1000": "[" * 1000 + "]" * 1000,
    "objects-1000": '{"a":' * 1000 + "1" + "}" * 1000,
    "33-levels": '{"email":' + "[" * 32 + "]" * 32 + "}",
}


@pytest.mark.parametrize("body", DEEP_BODIES.values(), ids=DEEP_BODIES.keys())
def test_json_nested_too_deeply_is_400_on_every_write_endpoint(staff, write_endpoints, body):
    before = (User.objects.count(), Event.objects.count())
    for method, path, authenticated in write_endpoints:
        response = send(client_for(staff if authenticated else None), method, path, body)

        assert response.status_code == 400, (path, response.content)
        assert response.json() == {"detail": "JSON nested too deeply: at most 32 levels."}
    assert (User.objects.count(), Event.objects.count()) == before
    assert not BatchJob.objects.exists()


def test_json_that_cannot_be_parsed_is_400_on_every_write_endpoint(staff, write_endpoints):
    for body in ['{"email": ', "NaN", '{"a": Infinity}', b'{"a": "\xff"}', "1" * 5000]:
        for method, path, authenticated in write_endpoints:
            response = send(client_for(staff if authenticated else None), method, path, body)

            assert response.status_code == 400, (path, body, response.content)
            assert response.json()["detail"].startswith("JSON parse error - ")


def parse(body: str):
    return JSONParser().parse(io.BytesIO(body.encode()), "application/json", {})


def test_the_parser_takes_32_levels_of_lists_and_objects_and_refuses_33():
    assert parse("[" * 32 + "]" * 32) is not None
    assert parse('{"a":' * 31 + "[]" + "}" * 31) is not None
    # Brackets inside strings are not nesting.
    assert parse(json.dumps(["[" * 40, {"a": "{" * 40}])) == ["[" * 40, {"a": "{" * 40}]
    for body in (
        "[" * 33 + "]" * 33,
        '{"a":' * 32 + "[]" + "}" * 32,
        # The deepest branch among siblings, lists and objects mixed.
        "[[], {}, " + '{"x": ' * 16 + "[" * 16 + "]" * 16 + "}" * 16 + ", []]",
    ):
        with pytest.raises(ParseError):
            parse(body)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ('{"a": "x\\u0000y"}', {"a": ["NUL characters are not allowed."]}),
        ('{"a": "\\ud800"}', {"a": ["Unpaired surrogate characters are not allowed."]}),
        ('{"a": "\\udc00x"}', {"a": ["Unpaired surrogate characters are not allowed."]}),
        (
            '{"a": ["ok", {"b": "\\u0000"}]}',
            {"a": {"1": {"b": ["NUL characters are not allowed."]}}},
        ),
        ('{"a": {"k\\u0000": 1}}', {"a": ["Keys may not contain NUL characters."]}),
        (
            '{"\\ud83d": 1}',
            {"non_field_errors": ["Keys may not contain unpaired surrogate characters."]},
        ),
        ('"\\u0000"', {"non_field_errors": ["NUL characters are not allowed."]}),
        ('{"a": [1, 1e400]}', {"a": {"1": ["Numbers must be within the range of a double."]}}),
        ('{"a": -1e400}', {"a": ["Numbers must be within the range of a double."]}),
    ],
)
def test_the_parser_refuses_unstorable_strings_and_infinite_numbers_naming_the_field(body, error):
    with pytest.raises(ValidationError) as raised:
        parse(body)
    assert raised.value.detail == error


def test_the_parser_keeps_what_can_be_stored():
    body = '{"emoji": "\\ud83d\\ude00", "escaped": "\\\\u0000", "big": 1e300, "n": 10e2}'
    expected = {"emoji": "\N{GRINNING FACE}", "escaped": "\\u0000", "big": 1e300, "n": 1000}
    assert parse(body) == expected


def test_an_error_path_does_not_echo_a_huge_key():
    with pytest.raises(ValidationError) as raised:
        parse(json.dumps({"k" * 100_000: "\x00"}))
    assert len(json.dumps(raised.value.detail)) < 200


@pytest.mark.parametrize(
    ("method", "path", "authenticated"),
    [
        ("post", "/api/v1/auth/login", False),
        ("post", "/api/v1/auth/register", False),
        ("post", "/api/v1/notifications/test", True),
        ("post", "/api/v1/emails/batch/classify", True),
    ],
)
def test_a_body_over_the_limit_is_413_with_a_json_body(staff, method, path, authenticated):
    body = json.dumps({"email": "x" * (3 * 1024 * 1024)})

    response = send(client_for(staff if authenticated else None), method, path, body)

    assert response.status_code == 413
    assert response.json() == {"detail": "Request body too large: at most 1048576 bytes."}


def test_the_body_limit_follows_its_setting(settings, staff):
    settings.MAX_REQUEST_BODY_BYTES = settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    body = json.dumps({"email": "x" * 100, "password": "y"})

    response = send(client_for(), "post", "/api/v1/auth/login", body)

    assert response.status_code == 413
    assert response.json() == {"detail": "Request body too large: at most 100 bytes."}


def test_a_message_that_quotes_a_huge_input_is_cut_short(staff):
    # ChoiceField quotes what it was given: 100,000 characters made a 100 kB error body.
    response = client_for(staff).get(f"/api/v1/emails/?status={'x' * 100_000}")

    assert response.status_code == 400
    (message,) = response.json()["status"]
    assert message.startswith('"xxx') and message.endswith("…") and len(message) == 300


class ExplodingApi(APIView):
    permission_classes = [AllowAny]

    def post(self, request):
        raise RuntimeError("secret detail from /srv/app/settings.py")


urlpatterns = [route("explode", ExplodingApi.as_view())]


@pytest.mark.urls(__name__)
@pytest.mark.parametrize("debug", [False, True])
def test_an_unexpected_error_is_a_json_500_without_its_traceback(settings, debug, caplog):
    settings.DEBUG = debug

    response = APIClient().post("/explode", {"a": 1}, format="json")

    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error."}
    assert "RuntimeError" in caplog.text  # kept server-side, with its traceback


# --- output rows (ModelSerializer.to_representation) ----------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 12, 4, 18, 5, 40, 123456, tzinfo=UTC),
        datetime(2026, 12, 4, 18, 5, 40, tzinfo=UTC),  # no microseconds
        datetime(2026, 12, 4, 18, 5, 40, tzinfo=zoneinfo.ZoneInfo("UTC")),
        datetime(2026, 12, 4, 18, 5, 40, tzinfo=fixed_offset(timedelta(hours=5, minutes=30))),
        datetime(2026, 12, 4, 18, 5, 40),  # noqa: DTZ001 (naive on purpose)
        "2026-12-04T18:05:40Z",
        None,
    ],
    ids=["utc", "whole-seconds", "zoneinfo-utc", "offset", "naive", "string", "none"],
)
@pytest.mark.parametrize("output_format", [None, "iso-8601", "%Y-%m-%d %H:%M", "ISO-8601"])
@pytest.mark.parametrize("zone", [None, zoneinfo.ZoneInfo("Europe/Paris")], ids=["utc", "paris"])
def test_a_datetime_renders_as_drfs_own_field_renders_it(value, output_format, zone, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DATETIME_FORMAT": "iso-8601"}
    options = {} if output_format is None else {"format": output_format}
    if zone is not None:
        options["default_timezone"] = zone
    drfs = serializers.DateTimeField(**{"default_timezone": UTC, **options})

    assert UTCDateTimeField(**options).to_representation(value) == drfs.to_representation(value)


def test_the_datetime_format_setting_is_followed():
    value = datetime(2026, 12, 4, 18, 5, 40, tzinfo=UTC)
    assert UTCDateTimeField().to_representation(value) == "2026-12-04T18:05:40Z"
    with override_settings(REST_FRAMEWORK={"DATETIME_FORMAT": "%d/%m/%Y"}):
        assert UTCDateTimeField().to_representation(value) == "04/12/2026"


def drf_row(serializer, instance) -> dict:
    """The row DRF's own Serializer.to_representation renders."""
    return dict(serializers.Serializer.to_representation(serializer, instance))


def test_every_output_serializer_renders_the_rows_drf_renders(make_user):
    owner = make_user()
    bare = EmailFactory(owner=owner, confidence=None, classification="", thread_id="")
    draft = DraftFactory(email__owner=owner, sent_at=timezone.now(), error="boom")
    job = BatchJob.objects.create(owner=owner, kind="classify", total=3, email_ids=[str(bare.id)])
    cases = [
        (EmailOutputSerializer(), bare),
        (EmailOutputSerializer(), draft.email),
        (EmailDetailOutputSerializer(), draft.email),  # a method field: the draft, nested
        (EmailDetailOutputSerializer(), bare),
        (DraftOutputSerializer(), draft),
        (BatchJobOutputSerializer(), job),  # a renamed source and a property
    ]
    for serializer, instance in cases:
        row = serializer.to_representation(instance)
        assert row == drf_row(serializer, instance), type(serializer).__name__
        assert json.dumps(row, cls=DRFJSONEncoder)  # JSON as it stands


def test_a_list_reads_dicts_of_its_columns_where_every_field_reads_one(make_user):
    owner = make_user()
    EmailFactory(owner=owner, confidence=None, classification="", thread_id="")
    DraftFactory(email__owner=owner, sent_at=timezone.now(), error="boom")
    BatchJob.objects.create(owner=owner, kind="classify", total=3)
    for serializer_class, queryset in [
        (EmailOutputSerializer, Email.objects.filter(owner=owner)),
        (DraftOutputSerializer, Draft.objects.filter(email__owner=owner)),
    ]:
        rows = list(serializer_class.rows(queryset))
        assert rows and all(type(row) is dict for row in rows)
        assert set(rows[0]) == {field.source for field in serializer_class().fields.values()}
        instances = list(queryset)
        # Each dict renders as DRF renders the model instance, types included.
        for row, instance in zip(rows, instances, strict=True):
            ours = serializer_class().to_representation(row)
            assert ours == drf_row(serializer_class(), instance)
            assert json.dumps(ours, cls=DRFJSONEncoder) == json.dumps(
                drf_row(serializer_class(), instance), cls=DRFJSONEncoder
            )
    # A method field, a renamed source or a property: the model instances, as before.
    for serializer_class, queryset in [
        (EmailDetailOutputSerializer, Email.objects.filter(owner=owner)),
        (BatchJobOutputSerializer, BatchJob.objects.filter(owner=owner)),
    ]:
        assert serializer_class.rows(queryset) is queryset


def test_model_fields_are_built_once_per_class_and_copied_for_each_serializer():
    from reasonflow.api import ModelSerializer

    names = ["id", "owner", "subject", "received_at", "classification", "confidence"]

    class Counting(ModelSerializer):
        builds = 0

        def build_field(self, *args):
            type(self).builds += 1
            return super().build_field(*args)

        class Meta:
            model = Email
            fields = names

    class Drfs(serializers.ModelSerializer):
        serializer_field_mapping = ModelSerializer.serializer_field_mapping

        class Meta:
            model = Email
            fields = names

    first, second, drfs = Counting(), Counting(), Drfs()
    assert list(first.fields) == list(second.fields) == names
    assert Counting.builds == len(names)  # the model read once, for the class
    for name in names:
        assert repr(first.fields[name]) == repr(second.fields[name]) == repr(drfs.fields[name])
        assert first.fields[name] is not second.fields[name]
        assert first.fields[name].parent is first and second.fields[name].parent is second
    # What the class keeps is never bound: each serializer binds its own copies.
    assert all(field.parent is None for field in Counting._built_fields.values())


def test_plain_fields_are_copied_for_each_serializer_and_validate_as_drfs():
    from reasonflow.api import Serializer

    fields = {
        "kind": serializers.ChoiceField(choices=["a", "b"]),
        "ids": serializers.ListField(child=serializers.UUIDField(), max_length=2),
        "tags": serializers.DictField(child=serializers.IntegerField(min_value=0)),
        "note": serializers.CharField(max_length=3, required=False),
    }
    ours = type("Ours", (Serializer,), dict(fields))
    drfs = type("Drfs", (serializers.Serializer,), dict(fields))
    bodies = [
        {"kind": "a", "ids": [str(uuid.uuid4())], "tags": {"x": 1}},
        {"kind": "c", "ids": ["nope", 1, 2], "tags": {"x": -1}, "note": "long"},
        {},
    ]
    for body in bodies:
        mine, theirs = ours(data=body), drfs(data=body)
        assert mine.is_valid() == theirs.is_valid()
        assert (mine.validated_data, mine.errors) == (theirs.validated_data, theirs.errors)
    first, second = ours(), ours()
    for name in fields:
        assert first.fields[name] is not second.fields[name]
        assert first.fields[name].parent is first
    for name in ("ids", "tags"):  # a child is its own field's
        assert first.fields[name].child is not second.fields[name].child
        assert first.fields[name].child.parent is first.fields[name]
    assert all(field.parent is None for field in ours._declared_fields.values())


def test_a_nested_serializer_field_is_copied_whole_for_each_serializer():
    from reasonflow.api import ModelSerializer

    class Nested(ModelSerializer):
        drafts = DraftOutputSerializer(many=True, read_only=True)

        class Meta:
            model = Email
            fields = ["id", "drafts"]

    draft = DraftFactory()
    first, second = Nested(draft.email), Nested(draft.email)
    assert first.data["drafts"] == second.data["drafts"] == [DraftOutputSerializer(draft).data]
    one, other = first.fields["drafts"], second.fields["drafts"]
    assert one is not other and one.child is not other.child
    assert one.child.parent is one and other.child.parent is other
    assert one.child.fields["id"] is not other.child.fields["id"]


def test_a_value_kept_as_it_is_is_what_drf_renders_types_included():
    from django.utils.safestring import mark_safe

    from reasonflow.api import ModelSerializer

    class Kept(ModelSerializer):
        as_bytes = serializers.JSONField(source="classification_reasons", binary=True)
        read_as_number = serializers.IntegerField(source="is_read")  # a bool: DRF's int()
        subject_as_text = serializers.CharField(source="subject")

        class Meta:
            model = Email
            fields = ["subject", "confidence", "is_read", "classification_reasons"]
            fields += ["as_bytes", "read_as_number", "subject_as_text"]

    for subject, confidence in ((mark_safe("<b>Hi</b>"), 0.5), ("Hello", 1)):
        email = EmailFactory(confidence=confidence, classification_reasons=["a", {"b": 1}])
        email.subject = subject  # a str subclass; an int where a float is declared
        serializer = Kept()
        row, drfs = serializer.to_representation(email), drf_row(Kept(), email)
        assert row == drfs
        assert [type(value) for value in row.values()] == [type(value) for value in drfs.values()]
    assert row["read_as_number"] == 0 and row["as_bytes"] == b'["a", {"b": 1}]'


def test_a_row_follows_drf_for_relations_dotted_sources_callables_and_missing_attributes():
    from reasonflow.api import ModelSerializer

    class Everything(ModelSerializer):
        owner_email = serializers.CharField(source="owner.email")
        status_label = serializers.CharField(source="get_status_display")
        shouting = serializers.SerializerMethodField()
        absent = serializers.CharField(required=False)  # not on the model: skipped
        fallback = serializers.CharField(default="the default")  # not on the model either
        whole = serializers.SerializerMethodField()

        class Meta:
            model = Email
            fields = ["id", "owner", "owner_email", "status_label", "shouting", "absent"]
            fields += ["fallback", "whole", "confidence", "received_at"]

        def get_shouting(self, email):
            return email.subject.upper()

        def get_whole(self, email):
            return None

    email = EmailFactory(confidence=None)
    serializer = Everything()
    row = serializer.to_representation(email)
    assert row == drf_row(serializer, email)
    assert row["owner"] == email.owner_id  # the relation's primary key, as DRF renders it
    assert row["status_label"] == email.get_status_display()
    assert "absent" not in row and row["fallback"] == "the default"
    assert row["confidence"] is None and row["whole"] is None
    assert [dict(r) for r in Everything([email, email], many=True).data] == [row, row]
