"""reasonflow/renderers.py: DRF's JSON output, byte for byte, encoded by orjson."""

import decimal
import enum
import json
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone

import pytest
from django.utils.translation import gettext_lazy
from rest_framework import renderers
from rest_framework.utils.serializer_helpers import ReturnDict, ReturnList

from reasonflow.renderers import JSONRenderer


class Colour(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


VALUES = {
    "scalars": [None, True, False, 0, -7, 2**63 - 1, -(2**63), 0.1, 0.8, 123456.789, -0.0],
    "text": ["", "plain", "ünïcødé ✓ 漢字", 'quotes " and \\ and \n\t', "\x00\x1f", "\u2028\u2029"],
    "ids": [uuid.UUID(int=1), uuid.uuid4()],
    "times": [
        datetime(2026, 12, 5, 1, 2, 3, 456789, tzinfo=UTC),
        datetime(2026, 12, 5, 1, 2, 3, tzinfo=timezone(timedelta(hours=-7, minutes=-30))),
        datetime(2026, 12, 5, 1, 2, 3, 999),  # noqa: DTZ001 naive, as DRF may meet one
        date(2026, 2, 28),
        time(23, 59, 59, 123456),
        timedelta(hours=1, microseconds=5),
    ],
    "others": [
        decimal.Decimal("1.10"),
        gettext_lazy("Lazy"),
        b"bytes",
        (1, 2),
        Colour.RED,
        Level.HIGH,
    ],
    "nested": {
        "a": [{"b": {"c": [[], {}]}}],
        "keys": {1: "int", 2.5: "float", None: "none"},
        "bool": {False: 0},
    },
    "drf": ReturnDict({"x": ReturnList([1, 2], serializer=None)}, serializer=None),
}


def drfs(data, media_type=None, context=None) -> bytes:
    return renderers.JSONRenderer().render(data, media_type, context)


def ours(data, media_type=None, context=None) -> bytes:
    return JSONRenderer().render(data, media_type, context)


@pytest.mark.parametrize("name", list(VALUES))
def test_the_bytes_are_drfs(name):
    assert ours(VALUES[name]) == drfs(VALUES[name])


@pytest.mark.parametrize("value", [1.5e-7, 1e22, 2.5e-300, 1 / 3])
def test_a_float_is_the_same_number_its_exponent_unpadded(value):
    # Python writes 1.5e-07, orjson 1.5e-7: the same number to every JSON reader.
    assert json.loads(ours({"f": value})) == json.loads(drfs({"f": value})) == {"f": value}


def test_a_set_is_written_as_drf_writes_it():
    assert ours({"s": {3}}) == drfs({"s": {3}})


def test_none_renders_nothing():
    assert ours(None) == b"" == drfs(None)


@pytest.mark.parametrize(
    ("media_type", "context"),
    [("application/json; indent=4", None), ("application/json", {"indent": 2})],
)
def test_an_indent_asked_for_is_drfs_output(media_type, context):
    assert ours(VALUES, media_type, context) == drfs(VALUES, media_type, context)


@pytest.mark.parametrize("value", [2**64, -(2**64) - 1, 10**30])
def test_an_int_past_64_bits_takes_drfs_way(value):
    assert ours({"n": value}) == drfs({"n": value})


def test_a_lone_surrogate_fails_as_in_drf():
    with pytest.raises(UnicodeEncodeError):
        drfs({"s": "\ud800"})
    with pytest.raises(UnicodeEncodeError):
        ours({"s": "\ud800"})


def test_a_value_nobody_can_write_fails_as_in_drf():
    with pytest.raises(TypeError):
        drfs({"o": object()})
    with pytest.raises(TypeError):
        ours({"o": object()})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_float_that_is_no_number_is_null_where_drf_raised(value):
    with pytest.raises(ValueError, match="not JSON compliant"):
        drfs({"f": value})
    assert ours({"f": value}) == b'{"f":null}'


def test_other_json_settings_take_drfs_way(settings):
    class Spaced(JSONRenderer):
        compact = False

    class Ascii(JSONRenderer):
        ensure_ascii = True

    for renderer in (Spaced(), Ascii()):
        base = renderers.JSONRenderer()
        base.compact, base.ensure_ascii = renderer.compact, renderer.ensure_ascii
        assert renderer.render(VALUES) == base.render(VALUES)


@pytest.mark.django_db
def test_every_rest_response_is_rendered_by_it(auth_client, user):
    from tests.emails.factories import EmailFactory

    EmailFactory.create_batch(3, owner=user, classification_reasons=["asks", "✓"])
    response = auth_client.get("/api/v1/emails/")
    assert isinstance(response.accepted_renderer, JSONRenderer)
    assert response.content == drfs(response.data)
