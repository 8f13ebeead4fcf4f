"""The close codes: one IntEnum (notifications/close_codes.py), the same in client.js."""

import re

from notifications.close_codes import AUTH_CLOSE_CODES, CloseCode
from tests.support.live import ROOT


def test_client_js_close_codes_equal_the_contracts():
    source = (ROOT / "notifications" / "clients" / "js" / "client.js").read_text()
    block = re.search(r"export const CloseCode = Object\.freeze\(\{(.*?)\}\)", source, re.S)
    assert block, "client.js no longer exports CloseCode"
    found = {name: int(code) for name, code in re.findall(r"(\w+):\s*(\d+)", block.group(1))}
    assert found == {code.name: code.value for code in CloseCode}


def test_the_python_client_retries_auth_only_after_the_auth_codes():
    from notifications.clients import python

    assert python.AUTH_CLOSE_CODES is AUTH_CLOSE_CODES
    assert {CloseCode.NO_TOKEN, CloseCode.INVALID_TOKEN} == AUTH_CLOSE_CODES
