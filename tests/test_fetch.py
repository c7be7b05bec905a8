"""Downloading images: one deadline for the whole download, and every malformed URL a clear ImageInputError."""

from __future__ import annotations

import socket
import threading
import time
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwenvl_agent.vlm import ImageInputError, load_image
from qwenvl_agent.vlm.fetch import fetch

GIVE_UP_S = 6.0  # the dripping servers stop here, so a fetch without a deadline ends (and fails) instead of hanging


class DrippingServer:
    """A real HTTP server on loopback that sends ``head`` at once, then ``drip`` one byte every ``interval``
    seconds until the client leaves or ``GIVE_UP_S`` pass."""

    def __init__(self, head: bytes, drip: bytes, interval: float = 0.2):
        self.head, self.drip, self.interval = head, drip, interval
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/slow.png"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection:
            connection.recv(65536)  # the request
            start = time.monotonic()
            try:
                connection.sendall(self.head)
                for byte in self.drip:
                    if time.monotonic() - start > GIVE_UP_S:
                        return
                    connection.sendall(bytes([byte]))
                    time.sleep(self.interval)
                connection.settimeout(max(GIVE_UP_S - (time.monotonic() - start), 0.01))
                connection.recv(1)  # then hold the connection, silent, until the client leaves or time is up
            except OSError:  # the client gave up: what a deadline is for
                return

    def close(self) -> None:
        self.listener.close()
        self.thread.join(GIVE_UP_S + 2)


def timed_failure(url: str, timeout: float) -> tuple[float, str]:
    start = time.monotonic()
    with pytest.raises(ImageInputError) as error:
        fetch(url, timeout=timeout, max_bytes=1_000_000)
    return time.monotonic() - start, str(error.value)


def test_a_body_dripped_a_byte_at_a_time_is_cut_off_at_the_deadline():
    server = DrippingServer(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n", b"x" * 1000)
    try:
        elapsed, message = timed_failure(server.url, timeout=1.0)
    finally:
        server.close()
    assert elapsed < 1.5, f"the download ran {elapsed:.1f} s past a 1 s deadline"
    assert "took longer than 1 s" in message


def test_headers_sent_slowly_are_cut_off_at_the_deadline():
    header = b"X-Padding: " + b"a" * 1000 + b"\r\n\r\n"
    server = DrippingServer(b"HTTP/1.1 200 OK\r\n", header)
    try:
        elapsed, message = timed_failure(server.url, timeout=1.0)
    finally:
        server.close()
    assert elapsed < 1.5, f"the download ran {elapsed:.1f} s past a 1 s deadline"
    assert "took longer than 1 s" in message


def test_a_server_that_accepts_and_says_nothing_is_cut_off_at_the_deadline():
    server = DrippingServer(b"", b"")
    try:
        elapsed, message = timed_failure(server.url, timeout=1.0)
    finally:
        server.close()
    assert elapsed < 1.5 and "took longer than 1 s" in message


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://example.com:99999/x.png", "port"),
        ("http://example.com:http/x.png", "port"),
        ("http://[::1/x.png", "not a valid URL"),
        ("http://" + "a" * 70 + ".example.com/x.png", "host"),  # a DNS label over 63 characters
        ("http://exa\x00mple.com/x.png", "host"),
        ("http:///x.png", "no host"),
    ],
)
def test_malformed_urls_are_image_input_errors(url, reason):
    with pytest.raises(ImageInputError, match=reason):
        fetch(url, timeout=1.0, max_bytes=1000, allow_private=False)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_any_text_after_the_scheme_is_refused_with_image_input_error(rest):
    real = socket.getaddrinfo

    def numbers_only(host, port, *args, **kwargs):
        """The real look-up's checks, without DNS (tests stay offline); every address is this machine's."""
        real(host, port, *args, **{**kwargs, "flags": socket.AI_NUMERICHOST})
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    with mock.patch.object(socket, "getaddrinfo", numbers_only), pytest.raises(ImageInputError):
        fetch("http://" + rest, timeout=0.5, max_bytes=1000, allow_private=False)


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("~nosuchuser/x.png", "nosuchuser"),
        ("a/b\x00c.png", "No image file"),
        ("/" + "a" * 300 + "/x.png", "No image file"),  # a name longer than the file system allows
        ("x" * 5000 + ".png", "No image file"),
        ("data:image/png;base64,iVBORw0KGgo===x", "base64"),
        ("file:///tmp/a\x00b.png", "No image file"),
        ("file://[::1/x.png", "not a valid URL"),
    ],
)
def test_malformed_paths_and_urls_are_image_input_errors(source, reason):
    with pytest.raises(ImageInputError, match=reason):
        load_image(source)


@pytest.mark.parametrize("source", ["~nosuchuser/x.png", "/tmp/a\x00b.png", "/" + "a" * 300 + "/x.png"])
def test_paths_checked_against_an_allowed_folder_are_image_input_errors(source, tmp_path):
    with pytest.raises(ImageInputError):
        load_image(source, local_files=tmp_path)


def test_a_document_store_refuses_a_path_of_an_unknown_user_with_image_input_error():
    from qwenvl_agent.tools.store import ImageStore

    with pytest.raises(ImageInputError, match="no user 'nosuchuser'"):
        ImageStore().add("~nosuchuser/report.pdf")
