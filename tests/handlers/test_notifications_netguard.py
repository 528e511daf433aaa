"""The guarded HTTP client push handlers use for endpoints that come from users."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from haosq.errors import ConfigError
from haosq.handlers.netguard import (
    GuardedHttpClient,
    NetPolicy,
    UnsafeDestination,
    check_url,
    retry_after_seconds,
)


def resolver_for(table):
    return lambda host, port: table[host]


@pytest.mark.parametrize(("addresses", "allowed"), [
    (["93.184.216.34"], True),
    (["2606:2800:220:1:248:1893:25c8:1946"], True),
    (["10.0.0.5"], False),
    (["93.184.216.34", "192.168.1.1"], False),  # one bad address is enough
    (["127.0.0.1"], False),
    (["::1"], False),
    (["fe80::1"], False),
    (["169.254.169.254"], False),
    (["100.64.0.1"], False),                     # carrier-grade NAT
    (["::ffff:172.16.0.1"], False),              # IPv4-mapped private
    (["224.0.0.1"], False),
    (["0.0.0.0"], False),
    (["64:ff9b::a00:1"], False),                 # NAT64 for 10.0.0.1
    (["64:ff9b::5db8:d822"], True),              # NAT64 for a public address
    (["2002:c0a8:101::1"], False),               # 6to4 for 192.168.1.1
    (["2001:0:4136:e378:8000:63bf:3fff:fdd2"], False),  # Teredo
])
def test_addresses_are_checked_after_resolution(addresses, allowed):
    resolve = resolver_for({"push.example.org": addresses})
    url = "https://push.example.org/p"
    if allowed:
        destination = check_url(url, NetPolicy(), resolve)
        assert destination.address == addresses[0] and destination.host == "push.example.org"
    else:
        with pytest.raises(UnsafeDestination, match="resolves to"):
            check_url(url, NetPolicy(), resolve)


def test_allow_list_schemes_and_credentials():
    policy = NetPolicy.from_config({"allow_private": ["10.0.0.0/8", "127.0.0.1"]})
    resolve = resolver_for({"gw.internal": ["10.1.2.3"]})
    assert check_url("https://gw.internal:8443/x?y=1", policy, resolve).pinned_url == "https://10.1.2.3:8443/x?y=1"
    for url, message in [("http://gw.internal/x", "only https"), ("ftp://gw.internal/x", "only https"),
                         ("https://user:pw@gw.internal/x", "credentials"), ("https:///x", "no host")]:
        with pytest.raises(UnsafeDestination, match=message):
            check_url(url, policy, resolve)
    plain = NetPolicy(allow_http=True, allow_private=(ipaddress.ip_network("10.0.0.0/8"),))
    assert check_url("http://gw.internal/x", plain, resolve).port == 80
    with pytest.raises(ConfigError, match=r"handlers\.push"):
        NetPolicy.from_config({"allow_private": ["not-an-ip"]}, where="handlers.push")


def test_requests_go_to_the_checked_address_with_tls_verified_for_the_name(http_peer, tls_ca):
    peer = http_peer(names=("push.haosq.test",))
    port = peer.url.rsplit(":", 1)[1]
    policy = NetPolicy(allow_private=(ipaddress.ip_network("127.0.0.1/32"),), ca_bundle=str(tls_ca.bundle))
    # The name resolves to the local peer only through this resolver: the client never asks DNS again.
    with GuardedHttpClient(policy, resolver=resolver_for({"push.haosq.test": ["127.0.0.1"]})) as client:
        response = client.post(f"https://push.haosq.test:{port}/hello", data=b"ping")
        assert response.status_code == 200
        assert peer.requests[0].headers["host"] == f"push.haosq.test:{port}"
        assert peer.requests[0].body == b"ping"
        # The certificate names push.haosq.test, not 127.0.0.1: verification uses the name.
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            client.post(f"https://127.0.0.1:{port}/hello", data=b"ping")


def test_large_answers_are_cut_off(http_peer, tls_ca):
    peer = http_peer()
    peer.respond = lambda request: (200, {}, b"x" * 5000)
    policy = NetPolicy(allow_private=(ipaddress.ip_network("127.0.0.1/32"),), ca_bundle=str(tls_ca.bundle),
                       max_response_bytes=1000)
    with GuardedHttpClient(policy) as client, pytest.raises(OSError, match="larger than 1000"):
        client.post(peer.url + "/big", data=b"")


def test_retry_after_forms():
    assert retry_after_seconds("120") == 120
    assert retry_after_seconds(None, 5) == 5
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # in the past: now
    assert retry_after_seconds("soon", 7) == 7
