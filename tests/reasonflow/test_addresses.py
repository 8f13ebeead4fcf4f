"""One notion of "the same client" for the REST throttles and socket admission: IPv4 as it is,
IPv6 by /64, IPv4-mapped IPv6 as IPv4, odd values bounded; an ignored X-Forwarded-For is
reported once. (tests/users/test_throttles.py and tests/notifications/realtime/
test_connections.py show each caller counting by it.)"""

import logging

import pytest

from reasonflow import addresses
from reasonflow.addresses import address_ident, client_address


@pytest.mark.parametrize(
    ("host", "ident"),
    [
        ("192.0.2.10", "192.0.2.10"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:0DB8:0001:0003:0000:0000:0000:0001", "2001:db8:1:3::/64"),
        ("::ffff:192.0.2.20", "192.0.2.20"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::1", "::/64"),
        ("x" * 500, "x" * 64),
        ("not:an:address:" + "y" * 300, ("not:an:address:" + "y" * 300)[:64]),
    ],
)
def test_an_address_counts_as_itself_its_ipv4_or_its_64(host, ident):
    assert address_ident(host) == ident


def test_a_scope_without_a_peer_address_has_none():
    assert client_address({"client": None}) is None
    assert client_address({"client": ("", 0)}) is None
    assert client_address({}) is None
    assert client_address({"client": ("2001:db8:1:2::1", 5000)}) == "2001:db8:1:2::/64"


def scope(host: str, forwarded_for: str | None = None) -> dict:
    headers = [] if forwarded_for is None else [(b"x-forwarded-for", forwarded_for.encode())]
    return {"type": "http", "client": (host, 5000), "headers": headers}


def test_an_x_forwarded_for_the_server_ignored_is_reported_once(monkeypatch, caplog):
    monkeypatch.setattr(addresses, "_forwarding_checked", False)
    caplog.set_level(logging.WARNING, logger="reasonflow.addresses")
    assert client_address(scope("10.0.0.5")) == "10.0.0.5"
    assert caplog.records == []  # no header yet: nothing to judge
    assert client_address(scope("10.0.0.5", "198.51.100.7")) == "10.0.0.5"
    assert client_address(scope("10.0.0.6", "198.51.100.8")) == "10.0.0.6"
    [warning] = caplog.records
    assert "ignored X-Forwarded-For from 10.0.0.5" in warning.getMessage()


def test_an_x_forwarded_for_the_server_applied_is_not_reported(monkeypatch, caplog):
    # The server replaced the peer with the header's address: the host appears in the header.
    monkeypatch.setattr(addresses, "_forwarding_checked", False)
    caplog.set_level(logging.WARNING, logger="reasonflow.addresses")
    assert client_address(scope("198.51.100.7", "198.51.100.7")) == "198.51.100.7"
    assert caplog.records == []
