"""Downloading an image over http(s) without becoming a way into the network around the machine.

Only http and https, also after redirects (followed here, hop by hop, at most ``MAX_REDIRECTS``); one
deadline for the whole download, not just for each read; a size cap. With ``allow_private=False`` (the
server's setting) a host that resolves to a loopback, private, link-local, multicast or otherwise
non-public address is refused, at every hop, and the connection goes to the address that was checked.
Every refusal names its reason.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
import urllib.parse

from .errors import ImageInputError, _short

MAX_REDIRECTS = 3
_REDIRECTS = {301, 302, 303, 307, 308}


def fetch(url: str, *, timeout: float, max_bytes: int, allow_private: bool = True) -> bytes:
    """The body of ``url``; ``ImageInputError`` naming the reason when it cannot or may not be fetched."""
    deadline = time.monotonic() + timeout
    for _ in range(MAX_REDIRECTS + 1):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ImageInputError(f"{_short(url)} is not an http(s) URL: only http and https images can be fetched.")
        address = _address(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), allow_private, deadline)
        connection = _connection(parts, address, _left(deadline, url))
        try:
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
            connection.request("GET", path, headers={"Host": parts.netloc, "User-Agent": "qwenvl-agent"})
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
            return _read(response, connection, url, deadline, max_bytes)
        except (OSError, http.client.HTTPException) as exc:
            if time.monotonic() >= deadline:
                raise ImageInputError(f"Downloading {_short(url)} took longer than {timeout:g} s.") from exc
            raise ImageInputError(f"Could not download {_short(url)}: {exc}.") from exc
        finally:
            connection.close()
    raise ImageInputError(f"{_short(url)} redirects more than {MAX_REDIRECTS} times.")


def _address(host: str, port: int, allow_private: bool, deadline: float) -> str:
    """An address of ``host`` to connect to, checked to be public unless private ones are allowed."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ImageInputError(f"Could not find the host {host!r} ({exc.strerror}).") from exc
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


def _kind(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    for kind in ("loopback", "link_local", "multicast", "private", "reserved", "unspecified"):  # the narrowest first
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return "non-public"


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a checked address, with the certificate and SNI of the host name."""

    def __init__(self, host: str, address: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, address: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


def _connection(parts: urllib.parse.SplitResult, address: str, timeout: float) -> http.client.HTTPConnection:
    port = parts.port or (443 if parts.scheme == "https" else 80)
    kind = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
    return kind(parts.hostname, address, port, timeout)


def _read(response, connection, url: str, deadline: float, max_bytes: int) -> bytes:
    data = bytearray()
    while True:
        if connection.sock is not None:
            connection.sock.settimeout(_left(deadline, url))
        piece = response.read(min(65536, max_bytes + 1 - len(data)))
        if not piece:
            return bytes(data)
        data += piece
        if len(data) > max_bytes:
            raise ImageInputError(f"{_short(url)} is larger than the {max_bytes}-byte limit.")


def _left(deadline: float, url: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise ImageInputError(f"Downloading {_short(url)} ran out of time.")
    return left
