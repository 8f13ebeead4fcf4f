"""The WebSocket close codes of the contract (PROTOCOL §1, docs/protocol.md "Close codes"): the one
definition, used by the server, the consumer, the metrics' label allowlist and the Python
client (which imports nothing else of the service). client.js repeats them; a test holds the
two equal."""

import enum


class CloseCode(enum.IntEnum):
    NORMAL = 1000
    SERVER_ERROR = 4000
    NO_TOKEN = 4001
    INVALID_TOKEN = 4002
    POLICY = 4008
    FRAME_TOO_LARGE = 4009
    TOO_SLOW = 4010
    RESTARTING = 4012


# Closes after which the same token must not be tried again (PROTOCOL §1).
AUTH_CLOSE_CODES = frozenset({CloseCode.NO_TOKEN, CloseCode.INVALID_TOKEN})
