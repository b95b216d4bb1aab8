"""Fetching images by URL without becoming an SSRF hole.

Only http and https; every address a name resolves to is checked (so decimal, octal and IPv6
spellings of loopback or private addresses are caught after resolution) and the connection goes to
the checked address, so a second DNS answer cannot swap it; redirects are followed by hand and
re-checked; bytes and time are capped. Cloud metadata endpoints are refused even when private
networks are allowed (for tests against a local server).
"""
from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from urllib.parse import SplitResult, urljoin, urlsplit

from search.core.units import data_size
from search.errors import InvalidImageError
from search.images.decode import MAX_BYTES, too_big

MAX_REDIRECTS = 5
TIMEOUT_S = 10.0
METADATA_ADDRESSES = {
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
}
METADATA_NAMES = {"metadata.google.internal", "metadata", "instance-data"}
USER_AGENT = "image-search/1.0 (+https://huggingface.co/spaces)"


def fetch(
    url: str,
    *,
    allow_private: bool = False,
    max_bytes: int = MAX_BYTES,
    timeout: float = TIMEOUT_S,
) -> bytes:
    """Download ``url``'s body, or raise InvalidImageError (reason refused_url, download_error or too_large)."""
    deadline = time.monotonic() + timeout
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        address = check_url(url, allow_private=allow_private)
        conn = _connection(parts, address, max(0.1, deadline - time.monotonic()))
        try:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.request("GET", path, headers={"Host": parts.netloc.rsplit("@", 1)[-1], "User-Agent": USER_AGENT})
            response = conn.getresponse()
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location")
                if not location:
                    raise InvalidImageError("download_error", f"redirect without a Location from {url}")
                url = urljoin(url, location)
                continue
            if response.status != 200:
                raise InvalidImageError("download_error", f"HTTP {response.status} from {url}")
            declared = response.getheader("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise too_big(int(declared), max_bytes)
            return _read_capped(response, max_bytes, deadline, url)
        except InvalidImageError:
            raise
        except (OSError, http.client.HTTPException) as exc:  # ssl.SSLError is an OSError
            raise InvalidImageError("download_error", _download_failure(exc),
                                    internals=f"{url}: {type(exc).__name__}: {exc}") from None
        finally:
            conn.close()
    raise InvalidImageError("download_error", f"more than {MAX_REDIRECTS} redirects")


def check_url(url: str, *, allow_private: bool = False) -> str:
    """Return the IP address to connect to for ``url``, or raise InvalidImageError('refused_url', why)."""
    if not isinstance(url, str) or len(url) > 4096:
        raise InvalidImageError("refused_url", "not a URL")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise InvalidImageError("refused_url", "give a web address that starts with https:// or http://"
                                if not parts.scheme else f"only http and https addresses are fetched, not {parts.scheme}:")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise InvalidImageError("refused_url", "the URL has no host")
    if host in METADATA_NAMES:
        raise InvalidImageError("refused_url", f"{host} is a cloud metadata endpoint")
    try:
        infos = socket.getaddrinfo(host, _port(parts), type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError):
        raise InvalidImageError("refused_url", f"the site {host} could not be found; check the address") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    for address in addresses:
        why = _refusal(address, allow_private)
        if why:
            refused = InvalidImageError if _refusal(address, True) else PrivateAddressError  # metadata: never allowed
            raise refused("refused_url", f"{host} resolves to {address}, {why}")
    return str(addresses[0])


class PrivateAddressError(InvalidImageError):
    """A URL refused because it leads to this machine or its network (allowed where the operator says so)."""


def _refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_private: bool) -> str | None:
    mapped = getattr(address, "ipv4_mapped", None) or getattr(address, "sixtofour", None)
    if mapped is not None:
        return _refusal(mapped, allow_private)
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if allow_private:
        return None
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private or address.is_reserved or address.is_unspecified or address.is_multicast:
        return "a private or reserved address"
    if not address.is_global:
        return "not a public address"
    return None


def _download_failure(exc: Exception) -> str:
    """What a failed connection or download means, in words (the exception's own go to the log)."""
    if isinstance(exc, TimeoutError):
        return "the site took too long to answer; try again, or save the image and upload it"
    if isinstance(exc, ssl.SSLError):
        return "the site's secure connection could not be checked (its certificate may be wrong)"
    if isinstance(exc, ConnectionRefusedError):
        return "the site refused the connection"
    return "the site could not be reached, or broke off while sending the image"


def _port(parts: SplitResult) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


def _connection(parts: SplitResult, address: str, timeout: float) -> http.client.HTTPConnection:
    port, host = _port(parts), parts.hostname or ""
    conn: _PinnedHTTP | _PinnedHTTPS
    if parts.scheme == "https":
        conn = _PinnedHTTPS(host, port, timeout=timeout, context=ssl.create_default_context())
    else:
        conn = _PinnedHTTP(host, port, timeout=timeout)
    conn.pinned_address = address
    return conn


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to the address that was checked, not to whatever the name resolves to now."""

    pinned_address = ""

    def connect(self) -> None:
        self.sock = socket.create_connection((self.pinned_address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    pinned_address = ""

    def connect(self) -> None:
        sock = socket.create_connection((self.pinned_address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def _read_capped(response: http.client.HTTPResponse, max_bytes: int, deadline: float, url: str) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        if time.monotonic() > deadline:
            raise InvalidImageError("download_error", f"timed out reading {url}")
        chunk = response.read1(64 * 1024)  # returns what arrived, so a slow drip meets the deadline
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > max_bytes:
            raise InvalidImageError("too_large", f"{url} sent more than {data_size(max_bytes)}, the limit for an image")
        chunks.append(chunk)
