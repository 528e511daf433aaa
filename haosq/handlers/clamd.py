"""A client for the ClamAV daemon: PING, VERSION and INSTREAM over a unix socket or TCP.

INSTREAM sends the bytes in length-prefixed chunks, so clamd needs no access to the file
system of the worker. clamd answers `stream: OK`, `stream: NAME FOUND` or an error; the
caller decides what OK means (clamd also says OK for what it skipped past its limits).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import BinaryIO

CHUNK = 64 * 1024


class ClamdUnavailable(Exception):
    """clamd cannot be reached or broke off the conversation; try again later."""


class ClamdError(Exception):
    """clamd answered with an error (for instance the stream was longer than it accepts)."""


@dataclass(frozen=True)
class ClamdReply:
    raw: str
    found: str | None  # the signature name when clamd reports one

    @property
    def ok(self) -> bool:
        return self.found is None


def parse_address(address: str) -> tuple[int, str | tuple[str, int]]:
    """`unix:/run/clamav/clamd.ctl`, `/path/to/socket`, `tcp://host:3310` or `host:3310`."""
    if address.startswith("unix:"):
        return socket.AF_UNIX, address[5:]
    if address.startswith("/"):
        return socket.AF_UNIX, address
    text = address.removeprefix("tcp://")
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"clamd address {address!r} is neither a socket path nor host:port")
    return socket.AF_INET, (host.strip("[]"), int(port))


class ClamdClient:
    def __init__(self, address: str, timeout: float = 60.0) -> None:
        self.address = address
        self.family, self.target = parse_address(address)
        self.timeout = timeout

    def _connect(self) -> socket.socket:
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.target)
        except OSError as exc:
            sock.close()
            raise ClamdUnavailable(f"cannot connect to clamd at {self.address}: {exc}") from None
        return sock

    def _command(self, command: str) -> str:
        with self._connect() as sock:
            try:
                sock.sendall(f"z{command}\0".encode())
                return _read_reply(sock)
            except OSError as exc:
                raise ClamdUnavailable(f"clamd at {self.address} failed during {command}: {exc}") from None

    def ping(self) -> bool:
        return self._command("PING") == "PONG"

    def version(self) -> str:
        return self._command("VERSION")

    def instream(self, stream: BinaryIO) -> ClamdReply:
        with self._connect() as sock:
            try:
                sock.sendall(b"zINSTREAM\0")
                while chunk := stream.read(CHUNK):
                    sock.sendall(struct.pack("!L", len(chunk)) + chunk)
                sock.sendall(struct.pack("!L", 0))
                reply = _read_reply(sock)
            except BrokenPipeError:
                # clamd closes the socket once the stream passes StreamMaxLength; its reply
                # is usually still readable.
                try:
                    reply = _read_reply(sock)
                except OSError as exc:
                    raise ClamdUnavailable(f"clamd at {self.address} closed the stream: {exc}") from None
            except OSError as exc:
                raise ClamdUnavailable(f"clamd at {self.address} failed during INSTREAM: {exc}") from None
        return parse_reply(reply)


def _read_reply(sock: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\0"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    if not data:
        raise ClamdUnavailable("clamd closed the connection without answering")
    return data.rstrip(b"\0").decode("utf-8", "replace").strip()


def parse_reply(reply: str) -> ClamdReply:
    """`stream: OK`, `stream: Eicar-Signature FOUND`, or an error line."""
    if reply.endswith("ERROR"):
        raise ClamdError(reply)
    body = reply.split(": ", 1)[1] if ": " in reply else reply
    if body == "OK":
        return ClamdReply(reply, None)
    if body.endswith(" FOUND"):
        return ClamdReply(reply, body.removesuffix(" FOUND").strip())
    raise ClamdError(f"unexpected clamd reply: {reply!r}")
