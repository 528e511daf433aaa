"""The guarded HTTP client push handlers use for endpoints that come from users."""

from __future__ import annotations

import ipaddress
import re

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


# Every IPv6 form that stands for an IPv4 address is judged by that address.
@pytest.mark.parametrize(("address", "embedded"), [
    ("::a00:1", "10.0.0.1"),                          # IPv4-compatible (::/96)
    ("::7f00:1", "127.0.0.1"),
    ("::127.0.0.1", "127.0.0.1"),
    ("::a9fe:a9fe", "169.254.169.254"),
    ("::ffff:127.0.0.1", "127.0.0.1"),                # IPv4-mapped (::ffff:0:0/96)
    ("::ffff:a9fe:a9fe", "169.254.169.254"),
    ("::ffff:c0a8:101", "192.168.1.1"),
    ("::ffff:0:7f00:1", "127.0.0.1"),                 # IPv4-translated (::ffff:0:0:0/96)
    ("::ffff:0:a00:1", "10.0.0.1"),
    ("64:ff9b::7f00:1", "127.0.0.1"),                 # NAT64, well-known prefix (64:ff9b::/96)
    ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
    ("64:ff9b::c000:2", "192.0.0.2"),                 # IETF protocol assignments
    ("2002:7f00:1::1", "127.0.0.1"),                  # 6to4 (2002::/16)
    ("2002:a9fe:a9fe::", "169.254.169.254"),
    ("2002:6440:1::1", "100.64.0.1"),
    ("2002:c612:1::1", "198.18.0.1"),                 # benchmarking
    ("2002:f000::1", "240.0.0.0"),                    # reserved
])
def test_ipv6_forms_of_non_public_ipv4_addresses_are_refused(address, embedded):
    resolve = resolver_for({"push.example.org": [address]})
    shown = re.escape(f"{ipaddress.ip_address(address)} (IPv4 {embedded})")
    with pytest.raises(UnsafeDestination, match=f"resolves to {shown}"):
        check_url("https://push.example.org/p", NetPolicy(), resolve)
    with pytest.raises(UnsafeDestination, match="resolves to"):
        check_url(f"https://[{address}]/p", NetPolicy(), resolve)


@pytest.mark.parametrize("address", [
    "64:ff9b:1::7f00:1",            # local-use NAT64 (64:ff9b:1::/48): translators of one network,
    "64:ff9b:1:7f00:1::",           # whose embedding position is theirs to choose
    "64:ff9b:1::5db8:d822",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo (server and client addresses inside)
    "2001:0:5db8:d822::80ff:fffe",           # Teredo to a client at 127.0.0.1
    "100::1",                        # discard-only
    "fec0::1",                       # site-local
    "fc00::1",                       # unique local
    "2001:db8::1",                   # documentation
    "3fff::1",                       # documentation
    "5f00::1",                       # SRv6 segment identifiers
    "::1:0:0:1",                     # reserved (::/8), embeds nothing
    "::", "::1",
])
def test_non_public_ipv6_ranges_are_refused(address):
    resolve = resolver_for({"push.example.org": [address]})
    with pytest.raises(UnsafeDestination, match="resolves to"):
        check_url("https://push.example.org/p", NetPolicy(), resolve)


@pytest.mark.parametrize("address", [
    "192.0.0.8", "192.0.0.171", "192.0.2.1", "192.88.99.1", "198.51.100.1", "203.0.113.1",
    "255.255.255.255", "0.1.2.3", "239.255.255.250",
])
def test_non_public_ipv4_blocks_are_refused(address):
    with pytest.raises(UnsafeDestination, match="resolves to"):
        check_url(f"https://{address}/p", NetPolicy())


@pytest.mark.parametrize("address", [
    "::ffff:93.184.216.34", "::ffff:0:5db8:d822", "::5db8:d822", "64:ff9b::5db8:d822",
    "2002:5db8:d822::1",
])
def test_ipv6_forms_of_public_ipv4_addresses_pass(address):
    resolve = resolver_for({"push.example.org": [address]})
    assert check_url("https://push.example.org/p", NetPolicy(), resolve).address == address
    assert check_url(f"https://[{address}]/p", NetPolicy()).address == str(ipaddress.ip_address(address))


def test_the_allow_list_covers_the_ipv6_forms_of_an_allowed_ipv4_address():
    policy = NetPolicy.from_config({"allow_private": ["127.0.0.1"]})
    for address in ("::ffff:127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::1"):
        assert check_url(f"https://[{address}]:8443/p", policy).address == str(ipaddress.ip_address(address))
    with pytest.raises(UnsafeDestination, match=r"IPv4 127\.0\.0\.2"):
        check_url("https://[::ffff:127.0.0.2]/p", policy)


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
