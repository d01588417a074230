"""The one guarded outbound HTTP client (DESIGN.md §12): link previews, webhooks, any future fetch.

A server that fetches URLs its users choose is an SSRF vector: ``http://169.254.169.254/`` reads cloud
credentials, ``http://localhost:6379/`` talks to Redis. Every hop of every fetch here:

1. parses the URL (http/https only, no credentials, no control characters);
2. resolves the host ONCE and refuses it if any address it resolves to is loopback, private,
   link-local, multicast, reserved, unspecified, shared (CGNAT), the cloud metadata address, or an IPv6
   address that embeds such an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible
   ``::a.b.c.d``, 6to4 ``2002::/16``, Teredo, NAT64 ``64:ff9b::/96``). Numeric forms such as
   ``2130706433``, ``0177.0.0.1`` and ``0x7f.1`` are checked as the address they resolve to;
3. connects to the address it checked (never resolving again, so DNS rebinding between check and
   connect cannot change it), while the Host header, TLS SNI and certificate verification use the name;
4. re-checks every redirect the same way, and caps the whole exchange: one time budget (a watchdog
   closes the socket when it is spent, so a slow-drip server cannot stretch it) and a byte cap.

``settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS`` (default false) lifts step 2 for tests and local demos.
The OWASP SSRF Prevention Cheat Sheet and the IANA special-purpose address registries (RFC 6890) are
the source of the address rules; Python's ``ipaddress`` flags carry the registries.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from django.conf import settings

logger = logging.getLogger("postflow.outbound")

ERROR_CODES = (
    "bad_url",
    "blocked_address",
    "connect_failed",
    "timeout",
    "too_large",
    "bad_content_type",
    "too_many_redirects",
    "http_error",
)
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Headers that carry the caller's credentials: not forwarded when a redirect changes the origin.
_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})

METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_SHARED_V4 = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT
_BENCHMARK_V4 = ipaddress.ip_network("198.18.0.0/15")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215 local-use


class OutboundError(Exception):
    """A refused or failed fetch. ``code`` is one of ERROR_CODES; ``str(error)`` says why in a sentence.

    4xx/5xx responses are NOT errors: they come back as an OutboundResponse with that status.
    ``http_error`` means the server broke HTTP itself (a malformed status line, a cut-off body).
    """

    def __init__(self, code: str, detail: str):
        assert code in ERROR_CODES, code
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class OutboundResponse:
    """The final response: ``url`` after redirects, header names lower-case (repeats joined by ", "),
    ``body`` at most ``max_bytes`` bytes, ``elapsed_ms`` for the whole fetch including redirects."""

    url: str
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed_ms: float


def address_refusal(address: str) -> str | None:
    """Why ``address`` (an IP string as getaddrinfo returns it) must not be contacted, or None if it is
    a public unicast address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "is not an IP address"
    if ip in METADATA_ADDRESSES:
        return "is the cloud metadata address"
    if ip.version == 6:
        embedded = None
        if ip.ipv4_mapped is not None:
            embedded = ip.ipv4_mapped
        elif ip.sixtofour is not None:
            embedded = ip.sixtofour
        elif ip.teredo is not None:
            embedded = ip.teredo[1]
        elif ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        elif ip.is_loopback or ip.is_unspecified:
            return _flags_refusal(ip)
        elif ip in _IPV4_COMPATIBLE:
            return "is an IPv4-compatible IPv6 address"
        elif ip in _NAT64_LOCAL:
            return "is a local-use NAT64 address"
        if embedded is not None:
            why = address_refusal(str(embedded))
            return f"embeds {embedded}, which {why}" if why is not None else None
    elif ip in _SHARED_V4 or ip in _BENCHMARK_V4:
        return "is a shared or benchmarking address"
    return _flags_refusal(ip)


_FLAG_NAMES = {
    "loopback": "a loopback",
    "unspecified": "an unspecified",
    "link_local": "a link-local",
    "multicast": "a multicast",
    "private": "a private",
    "reserved": "a reserved",
    "site_local": "a site-local",
}


def _flags_refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    for flag in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved", "site_local"):
        if getattr(ip, f"is_{flag}", False):
            return f"is {_FLAG_NAMES[flag]} address"
    if not ip.is_global:
        return "is not a global address"
    return None


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to for TCP (the system resolver; tests replace this function)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(info[4][0] for info in infos))


def open_socket(address: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to exactly ``address`` (tests replace this to stand in for the internet)."""
    return socket.create_connection((address, port), timeout=timeout)


def ssl_context() -> ssl.SSLContext:
    """The TLS context: system CAs, hostname verification on (tests replace this to trust a test CA)."""
    return ssl.create_default_context()


@dataclass(frozen=True)
class _Target:
    url: str
    scheme: str
    host: str  # ASCII (IDNA) host name or IP literal, no brackets
    port: int
    path: str  # path and query, never empty

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


def _parse(url: str, *, require_https: bool) -> _Target:
    if not isinstance(url, str) or not url or len(url) > 4096:
        raise OutboundError("bad_url", "The URL is empty or longer than 4096 characters.")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise OutboundError("bad_url", "The URL contains spaces or control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise OutboundError("bad_url", f"The URL cannot be parsed: {exc}.") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise OutboundError("bad_url", "Only http and https URLs can be fetched.")
    if require_https and scheme != "https":
        raise OutboundError("bad_url", "Only https URLs are allowed here.")
    if parts.username is not None or parts.password is not None:
        raise OutboundError("bad_url", "URLs with a user name or password are not fetched.")
    host = parts.hostname or ""
    if not host:
        raise OutboundError("bad_url", "The URL has no host.")
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        raise OutboundError("bad_url", "The URL's host is not a valid domain name.") from None
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return _Target(
        url=url, scheme=scheme, host=host, port=port or (443 if scheme == "https" else 80), path=path
    )


class _Deadline:
    def __init__(self, seconds: float):
        self.start = time.monotonic()
        self.at = self.start + seconds

    def left(self) -> float:
        return self.at - time.monotonic()

    def spent(self) -> bool:
        return self.left() <= 0

    def check(self, what: str) -> float:
        left = self.left()
        if left <= 0:
            raise OutboundError("timeout", f"The time budget ran out while {what}.")
        return left


def _resolve_checked(target: _Target, deadline: _Deadline, *, allow_private: bool) -> list[str]:
    """Resolve once, within the budget; every address must pass (a name with one private record among
    public ones is refused, or a rebinding server could pick which one we use)."""
    result: dict = {}

    def run():
        try:
            result["addresses"] = resolve(target.host, target.port)
        except Exception as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    thread = threading.Thread(target=run, name="outbound-resolve", daemon=True)
    thread.start()
    thread.join(deadline.check(f"resolving {target.host}"))
    if thread.is_alive():
        raise OutboundError("timeout", f"Resolving {target.host} took longer than the time budget.")
    if "error" in result or not result.get("addresses"):
        raise OutboundError("connect_failed", f"{target.host} could not be resolved.")
    addresses = result["addresses"]
    if not allow_private:
        for address in addresses:
            why = address_refusal(address)
            if why is not None:
                raise OutboundError("blocked_address", f"{target.host} resolves to {address}, which {why}.")
    return addresses


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP(S) to a host name over a socket opened to an address chosen before (no second lookup)."""

    def __init__(self, target: _Target, addresses: list[str], timeout: float):
        super().__init__(target.host, target.port, timeout=timeout)
        self._target = target
        self._addresses = addresses
        self._raw: socket.socket | None = None
        self.connected_address: str | None = None

    def connect(self) -> None:
        last: Exception | None = None
        for address in self._addresses:
            try:
                self._raw = open_socket(address, self.port, self.timeout)
            except OSError as exc:
                last = exc
                continue
            self.connected_address = address
            break
        else:
            raise last or OSError("no address to connect to")
        self._raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._target.scheme == "https":
            self.sock = ssl_context().wrap_socket(self._raw, server_hostname=self._target.host)
        else:
            self.sock = self._raw

    def abort(self) -> None:
        """Called by the watchdog: unblock whatever read or handshake is waiting."""
        raw = self._raw
        if raw is not None:
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_RDWR)


def _exchange(
    target: _Target,
    addresses: list[str],
    *,
    method: str,
    body: bytes | None,
    headers: dict[str, str],
    deadline: _Deadline,
    max_bytes: int,
    follow: bool,
    allowed_content_types: tuple[str, ...] | None,
) -> tuple[int, dict[str, str], bytes]:
    conn = _PinnedConnection(target, addresses, timeout=deadline.check(f"connecting to {target.host}"))
    watchdog = threading.Timer(max(deadline.left(), 0), conn.abort)
    watchdog.daemon = True
    watchdog.start()
    stage = "connecting"
    try:
        try:
            conn.connect()
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise OutboundError("connect_failed", f"TLS with {target.host} failed: {exc}.") from None
        except OSError as exc:
            if deadline.spent() or isinstance(exc, TimeoutError):
                raise
            raise OutboundError("connect_failed", f"Could not connect to {target.host}: {exc}.") from None
        sock = conn.sock  # http.client drops conn.sock once a Connection: close response starts
        stage = "waiting for the response"
        conn.request(method, target.path, body=body, headers=headers)
        sock.settimeout(deadline.check(stage))
        response = conn.getresponse()
        if deadline.spent():  # the watchdog cut a slowly dripped header block short
            raise OutboundError("timeout", f"The time budget ran out while {stage}.")
        status = response.status
        out_headers: dict[str, str] = {}
        for name, value in response.getheaders():
            key = name.lower()
            out_headers[key] = f"{out_headers[key]}, {value}" if key in out_headers else value
        if follow and status in REDIRECT_STATUSES and out_headers.get("location"):
            return status, out_headers, b""
        if allowed_content_types is not None:
            media_type = out_headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if media_type not in allowed_content_types:
                expected = ", ".join(allowed_content_types)
                got = media_type or "untyped"
                raise OutboundError("bad_content_type", f"The response is {got}; expected {expected}.")
        declared = out_headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise OutboundError("too_large", f"The response is {declared} bytes; the limit is {max_bytes}.")
        stage = "reading the body"
        chunks: list[bytes] = []
        received = 0
        while True:
            sock.settimeout(deadline.check(stage))
            chunk = response.read1(65536) if method != "HEAD" else b""
            if not chunk:
                if deadline.spent():
                    raise OutboundError("timeout", f"The time budget ran out while {stage}.")
                break
            received += len(chunk)
            if received > max_bytes:
                raise OutboundError("too_large", f"The response is larger than {max_bytes} bytes.")
            chunks.append(chunk)
        return status, out_headers, b"".join(chunks)
    except OutboundError:
        raise
    except TimeoutError:
        raise OutboundError("timeout", f"The time budget ran out while {stage}.") from None
    except (http.client.HTTPException, OSError, ValueError) as exc:
        if deadline.spent():
            raise OutboundError("timeout", f"The time budget ran out while {stage}.") from None
        raise OutboundError(
            "http_error", f"{target.host} broke the HTTP exchange while {stage}: {exc!r}."
        ) from None
    finally:
        watchdog.cancel()
        conn.close()


def fetch(
    url: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
    max_bytes: int = 1 << 20,
    max_redirects: int = 3,
    allowed_content_types: tuple[str, ...] | None = None,
    require_https: bool = False,
) -> OutboundResponse:
    """Fetch ``url`` through the SSRF guard and return the final response.

    ``timeout``: the TOTAL budget in seconds (resolution, connects, TLS, every redirect hop, a slowly
    dripped body). ``max_bytes``: cap on the final body (Content-Length above it is refused before
    reading). ``max_redirects``: hops followed, each re-resolved and re-checked; 0 returns a 3xx as is;
    more hops than allowed raise ``too_many_redirects``. 301/302 turn a POST into a GET, 303 always
    does; credentials headers are dropped when a redirect changes the origin.
    ``allowed_content_types``: media types (lower case, no parameters) the final response must have.
    ``require_https``: refuse http URLs, including redirects to them.
    Raises OutboundError (see its ``code``); 4xx/5xx statuses are returned, not raised.
    """
    deadline = _Deadline(timeout)
    allow_private = bool(getattr(settings, "OUTBOUND_ALLOW_PRIVATE_NETWORKS", False))
    send_headers = {"User-Agent": getattr(settings, "OUTBOUND_USER_AGENT", "Postflow"), "Connection": "close"}
    for name, value in (headers or {}).items():
        send_headers = {k: v for k, v in send_headers.items() if k.lower() != name.lower()}
        send_headers[name] = value
    method = method.upper()
    target = _parse(url, require_https=require_https)
    first_origin = target.origin
    hops = 0
    while True:
        addresses = _resolve_checked(target, deadline, allow_private=allow_private)
        status, out_headers, payload = _exchange(
            target,
            addresses,
            method=method,
            body=body,
            headers=send_headers,
            deadline=deadline,
            max_bytes=max_bytes,
            follow=max_redirects > 0,
            allowed_content_types=allowed_content_types,
        )
        if not (max_redirects > 0 and status in REDIRECT_STATUSES and out_headers.get("location")):
            elapsed = (time.monotonic() - deadline.start) * 1000
            logger.info(
                "outbound %s %s -> %s (%d bytes, %d redirects, %.0f ms)",
                method,
                target.host,
                status,
                len(payload),
                hops,
                elapsed,
            )
            return OutboundResponse(
                url=target.url, status=status, headers=out_headers, body=payload, elapsed_ms=elapsed
            )
        if hops >= max_redirects:
            raise OutboundError("too_many_redirects", f"More than {max_redirects} redirects.")
        hops += 1
        target = _parse(urljoin(target.url, out_headers["location"]), require_https=require_https)
        if status == 303 or (status in (301, 302) and method == "POST"):
            method, body = ("HEAD" if method == "HEAD" else "GET"), None
            send_headers = {k: v for k, v in send_headers.items() if k.lower() not in ("content-type",)}
        if target.origin != first_origin:
            send_headers = {k: v for k, v in send_headers.items() if k.lower() not in _CREDENTIAL_HEADERS}
