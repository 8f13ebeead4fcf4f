"""No client input gets a 5xx: hostile bodies and query strings at every endpoint of the URL
resolver (enumerated, so a new endpoint is covered without touching this file), with every
method its view allows, as a staff user and anonymously. Runs on SQLite and on PostgreSQL."""

import contextlib
import json
import re
import urllib.parse
from inspect import iscoroutinefunction

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.utils.regex_helper import normalize
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework import serializers
from rest_framework.test import APIClient
from rest_framework.views import APIView
from rest_framework_simplejwt.tokens import RefreshToken

from emails.models import BatchJob
from reasonflow.users.models import User
from tests.conftest import access_token_for
from tests.emails.factories import DraftFactory

pytestmark = pytest.mark.django_db

ALL_METHODS = ["get", "post", "put", "patch", "delete", "head", "options"]


def leaf_patterns(patterns=None, prefix=""):
    """(full regex, callback) of every route, in resolver order."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        regex = prefix + pattern.pattern.regex.pattern.lstrip("^")
        if isinstance(pattern, URLResolver):
            yield from leaf_patterns(pattern.url_patterns, regex)
        elif isinstance(pattern, URLPattern):
            yield regex, pattern.callback


def allowed_methods(callback) -> list[str]:
    """The methods a class-based view implements (HEAD where it has GET); every method for a
    function view, which may branch on any."""
    view_class = getattr(callback, "view_class", None)
    if view_class is None:
        return ALL_METHODS
    methods = [m for m in view_class.http_method_names if hasattr(view_class, m)]
    return [*methods, "head"] if "get" in methods and "head" not in methods else methods


def is_api(callback) -> bool:
    return issubclass(getattr(callback, "view_class", object), APIView)


def serializer_field_names() -> set[str]:
    """Every field name of every serializer that an API view names: keys worth sending."""
    names = set()
    for _, callback in leaf_patterns():
        if not is_api(callback):
            continue
        view = callback.view_class()
        candidates = [getattr(view.__class__, name, None) for name in dir(view.__class__)]
        if hasattr(view, "get_serializer_class"):
            with contextlib.suppress(AssertionError, AttributeError, TypeError):
                candidates.append(view.get_serializer_class())
        for candidate in candidates:
            if isinstance(candidate, type) and issubclass(candidate, serializers.Serializer):
                try:
                    names.update(candidate().fields)
                except (AssertionError, TypeError):
                    continue
    return names


ROUTES = list(leaf_patterns())
FIELD_NAMES = sorted(serializer_field_names() | {"page", "page_size", "format", "ticket"})


PARAMETER, ANGLED = re.compile(r"%\((\w+)\)s"), r"<\1>"  # test ids show /drafts/<draft_id>


def case(regex, callback, methods: list[str]):
    # An async view reaches the database from another thread, which sees only committed rows.
    transactional = iscoroutinefunction(callback)
    label = methods[0].upper() if len(methods) == 1 else "ANY"
    return pytest.param(
        regex,
        callback,
        methods,
        id=f"{label} /{PARAMETER.sub(ANGLED, normalize(regex)[0][0])}",
        marks=[pytest.mark.django_db(transaction=True)] if transactional else [],
    )


# Each method of a REST view is a case of its own; a Django view (the admin's, the probes)
# declares none, so its examples draw the method.
CASES = [
    case(regex, callback, [method] if is_api(callback) else allowed_methods(callback))
    for regex, callback in ROUTES
    for method in (allowed_methods(callback) if is_api(callback) else [None])
]


# --- hostile values ---------------------------------------------------------------------------

nasty_strings = st.sampled_from(
    [
        "\x00",
        "a\x00b",
        "\ud800",
        "x\udfffy",
        "\U0001f600",
        "",
        " ",
        "1e400",
        "-1",
        "NaN",
        str(10**30),
        str(2**63),
        "x" * 10_000,
        "00000000-0000-0000-0000-000000000000",
        "../../etc/passwd",
        "<script>",
        "true",
    ]
)
numbers = st.one_of(
    st.integers(),
    st.sampled_from([10**30, -(2**63) - 1, 2**63, 2**64, 10**4000, 0, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e308, 5e-324]),
)
scalars = st.one_of(
    st.none(), st.booleans(), numbers, nasty_strings, st.text(max_size=30), st.just(1e400)
)
keys = st.one_of(st.sampled_from(FIELD_NAMES), nasty_strings, st.text(max_size=10))
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)
    ),
    max_leaves=12,
)
raw_bodies = st.sampled_from(
    [
        "[" * 1000 + "]" * 1000,
        '{"a":' * 1000 + "1" + "}" * 1000,
        "[" * 33 + "]" * 33,
        '{"email": ',
        "NaN",
        "1e400",
        "1" * 5000,
        '"\\ud800"',
        '{"\\u0000": "\\u0000"}',
        '{"email_ids": ' + json.dumps(["x"] * 20_000) + "}",
        "x" * (1024 * 1024 + 1),
        "",
    ]
)


def encode(value) -> str:
    # allow_nan: NaN and Infinity go out as the literals a careless client would send.
    return json.dumps(value, allow_nan=True)


def bodies_for(plausible: dict):
    """JSON documents that give each known field either a value its view accepts or a hostile
    one (so that one bad field among good ones reaches the database), raw hostile text, and
    anything else."""
    fields = {name: st.one_of(st.just(plausible[name]), json_values) for name in plausible}
    fields.update({name: json_values for name in FIELD_NAMES if name not in plausible})
    return st.one_of(
        st.builds(encode, st.fixed_dictionaries({}, optional=fields)),
        raw_bodies,
        st.builds(encode, json_values),
    )


content_types = st.one_of(
    st.just("application/json"),
    st.sampled_from(
        [
            "application/json; charset=utf-16",
            "application/json; charset=unicode_escape",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ]
    ),
)
query_values = st.one_of(nasty_strings, st.builds(str, numbers), st.text(max_size=20))
queries = st.dictionaries(
    st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8)), query_values, max_size=3
)


def query_string(query: dict) -> str:
    # surrogatepass: a lone surrogate goes out as the invalid UTF-8 bytes a client could send.
    return "&".join(
        f"{urllib.parse.quote(k, errors='surrogatepass')}="
        f"{urllib.parse.quote(v, errors='surrogatepass')}"
        for k, v in query.items()
    )


# --- the property -----------------------------------------------------------------------------


@pytest.fixture
def staff(db):
    # No password: nothing here logs in with one, and hashing it for every case costs seconds.
    return User.objects.create(email="staff-fuzz@example.com", is_staff=True, is_superuser=True)


@pytest.fixture
def path_values(staff):
    """A value for each URL parameter: the staff user's own objects, so that bodies reach the
    views' validation rather than a 404."""
    draft = DraftFactory(email__owner=staff)
    job = BatchJob.objects.create(owner=staff, kind="sync")
    return {
        "email_id": str(draft.email_id),
        "draft_id": str(draft.id),
        "job_id": str(job.id),
        "object_id": "1",
        "content_type_id": "1",
        "id": str(staff.id),
        "app_label": "emails",
        "url": "x",
        "path": "x",
    }


@pytest.fixture
def plausible(staff, path_values):
    """A value each known field's view accepts."""
    return {
        "user": staff.email,
        "type": "email_received",
        "email": staff.email,
        "password": "correct-horse-battery-staple-42",
        "current_password": "correct-horse-battery-staple-42",
        "new_password": "another-horse-battery-staple-43",
        "refresh": str(RefreshToken.for_user(staff)),
        "email_ids": [path_values["email_id"]],
        "email_id": path_values["email_id"],
        "subject": "Re: pricing",
        "body": "Thanks.",
        "reason": "Too long.",
        "is_read": True,
        "data": {"email_id": path_values["email_id"], "subject": "Hi", "sender": "a@b.c"},
        "after": 0,
        "limit": 10,
        "status": "pending",
        "classification": "spam",
        "unread": "true",
        "page": 1,
        "page_size": 5,
    }


def hostile_examples(methods: list[str], plausible: dict) -> list[dict]:
    """Inputs every case gets, whatever hypothesis draws: the ones that were 500s."""
    if methods in (["head"], ["options"]):
        return []
    if methods == ["get"]:
        query = {"after": str(10**30), "status": "\x00", "page": "\x00", "limit": "1e400"}
        return [{"method": "get", "as_staff": True, "body": "", "query": query}]
    if len(methods) > 1:
        # A Django view (the admin's) reads no JSON; the size is what it must bear.
        return [{"method": "post", "as_staff": True, "body": "x" * (3 * 1024 * 1024)}]
    method = methods[0]
    data = plausible["data"]
    # Hypothesis raises the recursion limit while it runs a test (by 2,000 frames): 1,000
    # levels, a RecursionError in the server, would parse here.
    deep = 100_000
    return [
        {"method": method, "as_staff": False, "body": "[" * deep + "]" * deep},
        {"method": method, "as_staff": True, "body": '{"a":' * deep + "1" + "}" * deep},
        {"method": method, "as_staff": False, "body": "x" * (3 * 1024 * 1024)},
        {"method": method, "as_staff": True, "body": encode(plausible | {"subject": "a\x00b"})},
        {
            "method": method,
            "as_staff": True,
            "body": encode(plausible | {"data": data | {"subject": "a\x00b"}}),
        },
        {
            "method": method,
            "as_staff": True,
            "body": encode(plausible | {"data": data | {"subject": "\ud800"}}),
        },
    ]


def build_path(regex: str, callback, values: dict) -> str:
    """A path that `regex` matches and resolves to `callback`."""
    pattern, params = normalize(regex)[0]
    missing = set(params) - set(values)
    assert not missing, f"add a value for URL parameter(s) {missing} of {regex}"
    path = "/" + pattern % {name: values[name] for name in params}
    assert resolve(path).func is callback, f"{path} does not resolve to its own view"
    return path


def examples_for(methods: list[str]) -> int:
    """The random budget (~400 in all, besides the hostile examples every case gets): most
    where a REST view reads a body or a query."""
    if len(methods) > 1:
        return 2
    return {"head": 1, "options": 1, "get": 5}.get(methods[0], 8)


@pytest.mark.parametrize(("regex", "callback", "methods"), CASES)
def test_no_input_gets_a_server_error(
    regex,
    callback,
    methods,
    staff,
    path_values,
    plausible,
    settings,
    django_capture_on_commit_callbacks,
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    path = build_path(regex, callback, path_values)

    @hypothesis_settings(
        max_examples=examples_for(methods),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        method=st.sampled_from(methods),
        as_staff=st.booleans(),
        body=bodies_for(plausible),
        content_type=content_types,
        query=queries,
    )
    def check(method, as_staff, body, content_type, query):
        client = APIClient()
        if as_staff:
            client.force_login(staff)  # the admin's session
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token_for(staff)}")
        target = f"{path}?{query_string(query)}" if query else path
        data = body.encode("utf-8", "surrogatepass")
        with django_capture_on_commit_callbacks(execute=True):
            response = client.generic(method.upper(), target, data, content_type=content_type)

        assert response.status_code < 500, (method, target, content_type, body[:300], response)
        if is_api(callback) and 400 <= response.status_code < 500:
            assert len(response.content) <= 8192, (method, target, response.content[:300])

    for values in hostile_examples(methods, plausible):
        check = example(**({"content_type": "application/json", "query": {}} | values))(check)
    check()


def test_every_route_is_covered():
    # A route whose path cannot be built fails its case above; this guards the enumeration.
    assert len(ROUTES) > 50
    assert {"/api/v1/auth/login", "/api/v1/notifications/test", "/healthz"} <= {
        "/" + normalize(regex)[0][0] for regex, _ in ROUTES
    }
