"""Downloading an image over http(s) without becoming a way into the network around the machine.

Only http and https, also after redirects (followed here, hop by hop, at most ``MAX_REDIRECTS``); one
deadline for the whole download (look-up, connection, headers, body, redirects: every wait on the network
lasts at most the time left, so a server that sends a byte at a time gains nothing); a size cap. With ``allow_private=False`` (the
server's setting) a host that resolves to a loopback, private, link-local, multicast or otherwise
non-public address is refused, at every hop, and the connection goes to the address that was checked.
Every refusal names its reason.
"""

from __future__ import annotations

import http.client
import ipaddress
import math
import socket
import ssl
import threading
import time
import urllib.parse
from typing import Any

from .errors import ImageInputError, _short

MAX_REDIRECTS = 3
_REDIRECTS = {301, 302, 303, 307, 308}


def fetch(url: str, *, timeout: float, max_bytes: int, allow_private: bool = True) -> bytes:
    """The body of ``url``; ``ImageInputError`` naming the reason when it cannot or may not be fetched.

    ``timeout`` bounds the whole download: look-up, connection, headers, body and every redirect."""
    deadline = time.monotonic() + timeout
    for _ in range(MAX_REDIRECTS + 1):
        scheme, host, port, path = _target(url)
        address = _address(host, port, allow_private, deadline)
        connection = _PinnedConnection(host, address, port, deadline, tls=scheme == "https")
        try:
            connection.request("GET", path, headers={"Host": _host_header(host, port, scheme), "User-Agent": "qwenvl-agent"})
            response = connection.getresponse()
            if response.status in _REDIRECTS:
                location = response.getheader("Location")
                if not location:
                    raise ImageInputError(f"{_short(url)} redirects without saying where to.")
                url = urllib.parse.urljoin(url, location)
                continue
            if response.status != 200:
                raise ImageInputError(f"Could not download {_short(url)}: the server answered {response.status} {response.reason}.")
            declared = response.getheader("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise ImageInputError(f"{_short(url)} is {int(declared)} bytes, above the {max_bytes}-byte limit.")
            return _read(response, url, max_bytes)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if time.monotonic() >= deadline:
                raise ImageInputError(f"Downloading {_short(url)} took longer than {timeout:g} s.") from exc
            raise ImageInputError(f"Could not download {_short(url)}: {exc}.") from exc
        finally:
            connection.close()
    raise ImageInputError(f"{_short(url)} redirects more than {MAX_REDIRECTS} times.")


def _target(url: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, path)`` of an http(s) URL, the path percent-encoded as browsers send it;
    ``ImageInputError`` naming what is wrong with anything else."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError as exc:  # e.g. an unclosed [ of an IPv6 address
        raise ImageInputError(f"{_short(url)} is not a valid URL ({exc}).") from exc
    if parts.scheme not in ("http", "https"):
        raise ImageInputError(f"{_short(url)} is not an http(s) URL: only http and https images can be fetched.")
    if not host:
        raise ImageInputError(f"{_short(url)} has no host to download from.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ImageInputError(f"{_short(url)} has an invalid port: a port is a number from 1 to 65535.") from exc
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, host, port, urllib.parse.quote(path, safe="!#$%&'()*+,/:;=?@[]~")


def _host_header(host: str, port: int, scheme: str) -> str:
    name = f"[{host}]" if ":" in host else host
    return name if port == (443 if scheme == "https" else 80) else f"{name}:{port}"


def _address(host: str, port: int, allow_private: bool, deadline: float) -> str:
    """An address of ``host`` to connect to, checked to be public unless private ones are allowed."""
    try:
        infos = _look_up(host, port, deadline)
    except socket.gaierror as exc:
        raise ImageInputError(f"Could not find the host {host!r} ({exc.strerror}).") from exc
    except (UnicodeError, ValueError) as exc:  # a label over 63 characters, a NUL, …: no host can have this name
        raise ImageInputError(f"{host!r} is not a valid host name ({exc}).") from exc
    addresses = [info[4][0] for info in infos]
    if not allow_private:
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            if not ip.is_global or ip.is_multicast:
                kind = _kind(ip)
                raise ImageInputError(f"{host} resolves to {ip}, a {kind} address: fetching it is refused.")
    if time.monotonic() >= deadline:
        raise ImageInputError(f"The download from {host} ran out of time before it started.")
    return addresses[0]


def _look_up(host: str, port: int, deadline: float) -> list:
    """``getaddrinfo``, which has no timeout of its own, in a thread that is waited for until the deadline
    (a look-up left behind ends on the resolver's own timeout)."""
    outcome: dict[str, Any] = {}

    def look_up() -> None:
        try:
            outcome["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except Exception as exc:  # handed to the caller's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=look_up, name="qwenvl-dns", daemon=True)
    thread.start()
    thread.join(max(deadline - time.monotonic(), 0.0))
    if "error" in outcome:
        raise outcome["error"]
    if "infos" not in outcome:
        raise ImageInputError(f"Looking up the host {host!r} took longer than the download's time limit.")
    return outcome["infos"]


def _kind(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    for kind in ("loopback", "link_local", "multicast", "private", "reserved", "unspecified"):  # the narrowest first
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return "non-public"


class _Deadlined:
    """Mixed into a socket: every read and write waits only as long as the download has left, so a server
    that sends a byte at a time cannot stretch the download past its deadline."""

    deadline = math.inf

    def _time_left(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the download's time limit passed")
        self.settimeout(left)

    def recv_into(self, *args, **kwargs):
        self._time_left()
        return super().recv_into(*args, **kwargs)

    def recv(self, *args, **kwargs):
        self._time_left()
        return super().recv(*args, **kwargs)

    def send(self, *args, **kwargs):
        self._time_left()
        return super().send(*args, **kwargs)

    def sendall(self, *args, **kwargs):
        self._time_left()
        return super().sendall(*args, **kwargs)


class _DeadlineSocket(_Deadlined, socket.socket):
    pass


class _DeadlineSSLSocket(_Deadlined, ssl.SSLSocket):
    pass


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP(S) to a checked address (with the certificate and SNI of the host name), within a deadline."""

    def __init__(self, host: str, address: str, port: int, deadline: float, tls: bool):
        super().__init__(host, port, timeout=max(deadline - time.monotonic(), 0.001))
        self._address, self._deadline, self._tls = address, deadline, tls

    def connect(self) -> None:
        plain = socket.create_connection((self._address, self.port), max(self._deadline - time.monotonic(), 0.001))
        sock = _DeadlineSocket(fileno=plain.detach())
        sock.deadline = self._deadline
        if self._tls:
            context = ssl.create_default_context()
            context.sslsocket_class = _DeadlineSSLSocket
            sock.settimeout(max(self._deadline - time.monotonic(), 0.001))  # bounds the handshake
            sock = context.wrap_socket(sock, server_hostname=self.host)
            sock.deadline = self._deadline
        self.sock = sock


def _read(response: http.client.HTTPResponse, url: str, max_bytes: int) -> bytes:
    data = bytearray()
    while True:
        piece = response.read(min(65536, max_bytes + 1 - len(data)))
        if not piece:
            return bytes(data)
        data += piece
        if len(data) > max_bytes:
            raise ImageInputError(f"{_short(url)} is larger than the {max_bytes}-byte limit.")
