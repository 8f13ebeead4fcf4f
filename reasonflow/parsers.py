"""The JSON parser of every REST endpoint: DRF's, refusing with 400 what would otherwise fail
later as a 500 (deep nesting, strings the database cannot store, numbers the renderer cannot
write)."""

import codecs
import json
import math
import re

from rest_framework import exceptions, parsers
from rest_framework.settings import api_settings
from rest_framework.utils.json import strict_constant

# PostgreSQL refuses NUL in text and jsonb, and no UTF-8 encoder takes an unpaired surrogate
# (the database driver and the JSON renderer both raise on one).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# In valid JSON text either comes from an escape (raw control characters are refused) or, for
# surrogates, from an odd charset (`unicode_escape`): without one, the walk is not needed.
_LONE_SURROGATE_ESCAPE = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])"  # a high surrogate, no low one after
    r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"  # a low one alone
)
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_OBJECTS_AS_LISTS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


def _deeper_than(text: str, max_depth: int) -> bool:
    """Whether the valid JSON `text` nests containers deeper than `max_depth`, in C: strings
    and scalars removed and objects written as lists, each pass removes the innermost ones."""
    if text.count("[") + text.count("{") <= max_depth:
        return False
    # Outside its strings, JSON text is ASCII.
    skeleton = _JSON_STRING.sub("", text).encode("ascii", "ignore")
    brackets = skeleton.translate(_OBJECTS_AS_LISTS, _NOT_BRACKETS)
    for _ in range(max_depth):
        if not brackets:
            return False
        brackets = brackets.replace(b"[]", b"")
    return bool(brackets)


def _may_hold_unstorable(text: str) -> bool:
    """False when no string of the JSON `text` can hold NUL or a lone surrogate (cheap checks
    first: substring searches run in C at memory speed, the regex only when they hit)."""
    if "\\u0000" in text:
        return True
    if ("\\ud" in text or "\\uD" in text) and _LONE_SURROGATE_ESCAPE.search(text):
        return True
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, plus 400 for what would otherwise fail later as a 500.

    Refused: nesting deeper than `max_depth`; NUL or unpaired surrogates in any string (keys
    included); numbers out of the float range (1e400 parses as infinity, which neither the
    renderer nor PostgreSQL takes). The error names the offending field the way serializers
    do, e.g. `{"data": {"subject": ["NUL characters are not allowed."]}}`, without echoing it.
    """

    max_depth = 32

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = parsers.get_encoding(parser_context or {})
        overflows = []

        def parse_float(literal: str) -> float:
            number = float(literal)
            if math.isinf(number):
                overflows.append(literal)
            return number

        try:
            text = codecs.getreader(encoding)(stream).read()
            document = json.loads(
                text,
                parse_float=parse_float,
                parse_constant=strict_constant if self.strict else None,
            )
        except ValueError as exc:  # also UnicodeDecodeError and ints over 4300 digits
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
        except RecursionError:
            # The C scanner stops at the interpreter's recursion limit (~1000 levels).
            raise exceptions.ParseError(self.too_deep_detail()) from None
        if _deeper_than(text, self.max_depth):
            raise exceptions.ParseError(self.too_deep_detail())
        # Walking the document costs several times parsing it: only when it may be needed.
        if overflows or _may_hold_unstorable(text):
            problem = _find_unstorable(document)
            if problem is not None:
                raise _field_error(*problem)
        return document

    def too_deep_detail(self) -> str:
        return f"JSON nested too deeply: at most {self.max_depth} levels."


NUL_IN_STRING = "NUL characters are not allowed."
SURROGATE_IN_STRING = "Unpaired surrogate characters are not allowed."
NUL_IN_KEY = "Keys may not contain NUL characters."
SURROGATE_IN_KEY = "Keys may not contain unpaired surrogate characters."
INFINITE_NUMBER = "Numbers must be within the range of a double."


def _find_unstorable(document) -> tuple[tuple, str] | None:
    """(path, message) of a string the database cannot store or a number the renderer cannot
    write, anywhere in the parsed `document`; None if there is none. Iterative: no recursion."""
    if not isinstance(document, (dict, list)):
        document, root = [document], True  # a bare scalar reports at the root
    else:
        root = False
    stack = [(document, ())]
    while stack:
        container, path = stack.pop()
        is_dict = isinstance(container, dict)
        for key, item in container.items() if is_dict else enumerate(container):
            if is_dict and _UNSTORABLE.search(key):
                return path, NUL_IN_KEY if "\x00" in key else SURROGATE_IN_KEY
            if isinstance(item, (dict, list)):
                stack.append((item, (*path, key)))
            elif isinstance(item, str):
                if _UNSTORABLE.search(item):
                    where = () if root else (*path, key)
                    return where, NUL_IN_STRING if "\x00" in item else SURROGATE_IN_STRING
            elif isinstance(item, float) and math.isinf(item):
                return (() if root else (*path, key)), INFINITE_NUMBER
    return None


def _field_error(path: tuple, message: str) -> exceptions.ValidationError:
    """A ValidationError shaped like a nested serializer's (list indexes as keys, as DRF's
    ListField does) at `path`; the document root is a non-field error."""
    detail: dict | list = [message]
    if not path:
        return exceptions.ValidationError({api_settings.NON_FIELD_ERRORS_KEY: detail})
    for key in reversed(path):
        key = str(key)
        # A key is echoed only in part: a 1 MiB key must not make a 1 MiB error body.
        detail = {key if len(key) <= 64 else f"{key[:64]}…": detail}
    return exceptions.ValidationError(detail)
