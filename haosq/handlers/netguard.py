"""Outgoing HTTP to URLs that users supplied (push endpoints, webhooks, remote files).

A URL from a user must not reach the inside of the network (server-side request forgery):

- https only, unless the policy allows plain http;
- the host name is resolved once, every address it resolves to is checked, and the request
  goes to that checked address (the name is kept for TLS verification and the Host header),
  so a second lookup cannot swap in an internal address (DNS rebinding);
- private, loopback, link-local, multicast, reserved and unspecified addresses are refused
  unless the policy lists them (`allow_private = ["127.0.0.1", "10.0.0.0/8"]`); an IPv6
  address that stands for an IPv4 address (IPv4-compatible, mapped or translated, NAT64,
  6to4) is judged by that IPv4 address, and the ranges whose IPv4 address cannot be known
  here (local-use NAT64, Teredo) are refused;
- redirects are never followed (a redirect is the response, for the caller to judge);
- responses are read up to a size limit.

The policy usually comes from a handler's configuration table:

    [handlers.push]
    allow_private = ["127.0.0.1"]     # addresses or networks exempt from the refusal
    allow_http = false
    ca_bundle = "/etc/ssl/private-ca.pem"   # extra trust for TLS, e.g. an internal CA
    timeout = 10
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from haosq.errors import ConfigError, PermanentError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]


class UnsafeDestination(PermanentError):
    """The URL points somewhere haosq refuses to send requests (scheme or address)."""


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve {host!r}: {exc.strerror}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class NetPolicy:
    allow_private: tuple[IPNetwork, ...] = ()
    allow_http: bool = False
    ca_bundle: str | None = None
    timeout: float = 10.0
    max_response_bytes: int = 1024 * 1024

    @classmethod
    def from_config(cls, table: Mapping[str, Any], *, where: str = "handlers") -> NetPolicy:
        """Read `allow_private`, `allow_http`, `ca_bundle`, `timeout`, `max_response_bytes`."""
        try:
            networks = tuple(
                ipaddress.ip_network(str(item), strict=False) for item in table.get("allow_private", ())
            )
            return cls(
                allow_private=networks,
                allow_http=bool(table.get("allow_http", False)),
                ca_bundle=str(table["ca_bundle"]) if table.get("ca_bundle") else None,
                timeout=float(table.get("timeout", 10.0)),
                max_response_bytes=int(table.get("max_response_bytes", 1024 * 1024)),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"[{where}]: invalid network policy: {exc}") from None

    def allows(self, address: IPAddress) -> bool:
        if any(address in network for network in self.allow_private):
            return True
        embedded = embedded_ipv4(address)
        if embedded is not None:
            return self.allows(embedded)
        return is_public(address)

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self.ca_bundle:
            context.load_verify_locations(cafile=self.ca_bundle)
        return context


# Blocks that are not globally reachable (IANA's special-purpose registries), listed here as
# well as asked of `ipaddress`, whose tables differ between Python releases.
NON_PUBLIC = tuple(ipaddress.ip_network(block) for block in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "::/128", "::1/128", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32", "3fff::/20",
    "5f00::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
))
# IPv6 prefixes whose last 32 bits are an IPv4 address: IPv4-compatible, IPv4-mapped,
# IPv4-translated (SIIT) and the well-known NAT64 prefix.
_EMBEDS_IN_LOW_BITS = tuple(ipaddress.ip_network(block) for block in (
    "::/96", "::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96",
))


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (compatible, mapped, translated, NAT64,
    6to4), so that the IPv4 address is the one checked."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if any(address in prefix for prefix in _EMBEDS_IN_LOW_BITS):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def is_public(address: IPAddress) -> bool:
    """Globally reachable unicast: nothing private, local, reserved, multicast or special."""
    if any(address in network for network in NON_PUBLIC if network.version == address.version):
        return False
    return address.is_global and not (address.is_multicast or address.is_reserved)


@dataclass(frozen=True)
class Destination:
    """A checked URL: where to connect (the address) and what to call it (the host)."""

    url: str
    scheme: str
    host: str
    port: int
    address: str
    target: str  # path and query

    @property
    def pinned_url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return urlunsplit((self.scheme, f"{host}:{self.port}", self.target, "", ""))

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def check_url(url: str, policy: NetPolicy, resolver: Resolver = system_resolver) -> Destination:
    """Resolve and check `url`; raises UnsafeDestination when the policy refuses it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeDestination(f"invalid URL {url!r}: {exc}") from None
    schemes = ("https", "http") if policy.allow_http else ("https",)
    if parts.scheme not in schemes:
        raise UnsafeDestination(f"refused URL {url!r}: only {' or '.join(schemes)} is allowed")
    if not parts.hostname:
        raise UnsafeDestination(f"refused URL {url!r}: no host")
    if parts.username or parts.password:
        raise UnsafeDestination(f"refused URL {url!r}: credentials in URLs are not allowed")
    port = port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    addresses = [str(literal)] if literal else resolver(host, port)
    if not addresses:
        raise OSError(f"{host!r} resolves to no address")
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if not policy.allows(address):
            embedded = embedded_ipv4(address)
            shown = f"{address} (IPv4 {embedded})" if embedded is not None else str(address)
            raise UnsafeDestination(
                f"refused URL {url!r}: {host} resolves to {shown}, a private, loopback, "
                "link-local or reserved address (list it in allow_private to permit it)"
            )
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    return Destination(url, parts.scheme, host, port, addresses[0].split("%", 1)[0], target)


class GuardedHttpClient:
    """An httpx client that only talks to checked destinations. Close it (or use `with`)."""

    def __init__(self, policy: NetPolicy, *, resolver: Resolver = system_resolver,
                 user_agent: str = "haosq") -> None:
        self.policy = policy
        self._resolver = resolver
        self._client = httpx.Client(
            verify=policy.ssl_context(),
            follow_redirects=False,
            trust_env=False,  # no proxies from the environment: the checked address is the peer
            timeout=policy.timeout,
            headers={"User-Agent": user_agent},
        )

    def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | str | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        destination = check_url(url, self.policy, self._resolver)
        all_headers = {**(headers or {}), "Host": destination.host_header}
        extensions: dict[str, Any] = {}
        if destination.scheme == "https":
            # TLS is verified against the host name while the socket goes to the checked address.
            extensions["sni_hostname"] = destination.host
        request = self._client.build_request(
            method, destination.pinned_url, content=content, json=json, headers=all_headers,
            extensions=extensions, timeout=timeout if timeout is not None else self.policy.timeout,
        )
        response = self._client.send(request, stream=True)
        try:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > self.policy.max_response_bytes:
                    raise OSError(
                        f"response from {destination.host} is larger than "
                        f"{self.policy.max_response_bytes} bytes"
                    )
        finally:
            response.close()
        # A plain response object with the body read, detached from the stream.
        return httpx.Response(response.status_code, headers=response.headers, content=bytes(body),
                              request=request)

    def post(self, url: str, *, data: bytes | str | None = None, headers: Mapping[str, str] | None = None,
             timeout: float | None = None, json: Any = None) -> httpx.Response:
        """POST; `data=` also makes this usable where a `requests` session is expected."""
        return self.request("POST", url, content=data, json=json, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> GuardedHttpClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def retry_after_seconds(value: str | None, default: float | None = None) -> float | None:
    """The delay a Retry-After header asks for (seconds or an HTTP date), or `default`."""
    if not value:
        return default
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from datetime import UTC, datetime
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
