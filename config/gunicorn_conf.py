"""gunicorn settings for Postflow: ``gunicorn -c config/gunicorn_conf.py config.wsgi:application``.

gunicorn answers some malformed requests itself, before Django sees them (a request line longer than
``limit_request_line``: 414; too many or too large headers: 431; an unparseable request: 400), with a
small HTML page. Every Postflow error is JSON ``{code, detail}`` (DESIGN.md §4), so this file swaps
gunicorn's error writer for one that writes JSON. The reason text names gunicorn's check, never the
request's bytes.
"""

from __future__ import annotations

import json

from gunicorn import util

# gunicorn's maximum (8190 bytes; the default is 4094): signed media URLs and cursors stay well below.
limit_request_line = 8190

_CODES = {
    400: "bad_request",
    403: "forbidden",
    414: "uri_too_long",
    417: "expectation_failed",
    431: "headers_too_large",
    500: "server_error",
    501: "not_implemented",
}
_DETAILS = {
    414: f"The request line is longer than {limit_request_line} bytes; shorten the URL.",
    431: "The request headers are too many or too large.",
}


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """Drop-in for ``gunicorn.util.write_error`` (same arguments): a JSON body, not HTML."""
    body = json.dumps(
        {
            "code": _CODES.get(status_int, "bad_request" if 400 <= status_int < 500 else "server_error"),
            "detail": _DETAILS.get(status_int, f"{reason}."),
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("latin1")
    util.write_nonblock(sock, head + body)


util.write_error = write_json_error


# The ASGI worker (``-k asgi``, the production web: held SSE connections cost no thread) answers the
# same malformed requests through its own writer: JSON there too.
try:
    from gunicorn.asgi import protocol as _asgi_protocol
except ImportError:  # a gunicorn without the ASGI worker
    _asgi_protocol = None


def _asgi_json_error(self, status, message, extra_headers=()) -> None:
    """Drop-in for ``ASGIProtocol._send_error_response``: the JSON body of ``write_json_error``."""
    reason = _asgi_protocol._REASON_PHRASES.get(status, "Error")
    body = json.dumps(
        {
            "code": _CODES.get(status, "bad_request" if 400 <= status < 500 else "server_error"),
            "detail": _DETAILS.get(status, f"{reason}."),
        }
    ).encode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in extra_headers)
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"{extra}Connection: close\r\n\r\n"
    ).encode("latin-1")
    self._safe_write(head + body)


if _asgi_protocol is not None:
    _asgi_protocol.ASGIProtocol._send_error_response = _asgi_json_error
