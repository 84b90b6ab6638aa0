"""The opening handshake of a signaling socket (RFC 6455 4.2), free of Tornado and of I/O:
what a request must carry to be upgraded, the answer, and the neutral :class:`Request` that
the socket's rules and the operators' ``has_socket_pass`` hooks read.

Both transports check a request here: the lean one with the head httptools parsed, Tornado's
with the request Tornado parsed. A request that fails gets the status Tornado's own
websocket handler gives (400, 403, 405, 426, checked in its order), so clients see what
they always saw.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Iterator
from http.cookies import CookieError, SimpleCookie
from ipaddress import ip_address
from time import monotonic
from urllib.parse import parse_qs, urlsplit

WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: Tornado's argument clean-up: control characters other than \t \n \r become spaces.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1f]")
_NO_DEFAULT: object = object()


class Headers:
    """Request headers: names without case, several values per name (joined by commas on
    ``get``, as Tornado's HTTPHeaders does)."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: dict[str, list[str]] = {}
        for name, value in items:
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        self._items.setdefault(name.lower(), []).append(value)

    def get_list(self, name: str) -> list[str]:
        return list(self._items.get(name.lower(), ()))

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self._items.get(name.lower())
        return ",".join(values) if values else default

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def items(self) -> list[tuple[str, str]]:
        return [(name, value) for name, values in self._items.items() for value in values]


def parse_query(query: str) -> dict[str, list[bytes]]:
    """Query arguments as Tornado keeps them: names as text, values as (undecoded) bytes."""
    parsed = parse_qs(query, keep_blank_values=True, encoding="latin1")
    return {name: [value.encode("latin1") for value in values] for name, values in parsed.items()}


class Request:
    """What the handshake said, for the socket's rules and the ``has_socket_pass`` hooks:
    the names of Tornado's request (``method``, ``uri``, ``path``, ``query``, ``headers``,
    ``remote_ip``, ``host``, ``arguments``), whichever transport read it."""

    __slots__ = ("method", "uri", "path", "query", "headers", "remote_ip", "query_arguments", "started")

    def __init__(self, method: str, uri: str, headers: Headers, remote_ip: str) -> None:
        self.method = method
        self.uri = uri
        self.path, _, self.query = uri.partition("?")
        self.headers = headers
        self.remote_ip = remote_ip
        self.query_arguments = parse_query(self.query)
        self.started = monotonic()

    @property
    def arguments(self) -> dict[str, list[bytes]]:
        return self.query_arguments

    @property
    def host(self) -> str:
        return self.headers.get("Host", "") or ""

    def request_time(self) -> float:
        return monotonic() - self.started

    def argument(self, name: str, strip: bool = True) -> str | None:
        """The last value of a query argument as Tornado's ``get_query_argument`` gives it
        (control characters replaced, stripped); None if absent or not UTF-8."""
        values = self.query_arguments.get(name)
        if not values:
            return None
        try:
            value = _CONTROL_CHARS.sub(" ", values[-1].decode("utf-8"))
        except UnicodeDecodeError:
            return None
        return value.strip() if strip else value

    def cookie(self, name: str) -> str | None:
        header = self.headers.get("Cookie")
        if not header:
            return None
        cookies = SimpleCookie()
        try:
            cookies.load(header)
        except CookieError:
            return None
        morsel = cookies.get(name)
        return morsel.value if morsel is not None else None


class HandshakeError(Exception):
    """A request that cannot be upgraded: answered with ``status`` and ``message``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message
        self.headers = headers or {}


def accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept answer to a Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + WEBSOCKET_GUID).digest()).decode("ascii")


def valid_key(key: str | None) -> bool:
    """A Sec-WebSocket-Key is 16 random bytes in base64 (RFC 6455 4.1)."""
    if not key or not key.isascii():
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def origin_allowed(origin: str, host: str | None, allowed: list[str]) -> bool:
    """An ``Origin`` in ALLOWED_ORIGINS ("*" for any), or else Tornado's rule: its host must
    be the one the browser asked (the ``Host`` header). An origin that is not a URL is refused."""
    if "*" in allowed or origin.lower() in (o.lower() for o in allowed):
        return True
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:  # e.g. "http://[": not a URL
        return False
    return bool(netloc) and netloc.lower() == (host or "").lower()


def check_upgrade(request: Request, allowed_origins: list[str]) -> str:
    """Raise HandshakeError unless ``request`` is a well-formed upgrade this server accepts;
    answer the Sec-WebSocket-Accept value."""
    if request.method != "GET":
        raise HandshakeError(405, "Method Not Allowed", {"Allow": "GET"})
    headers = request.headers
    if (headers.get("Upgrade") or "").lower() != "websocket":
        raise HandshakeError(400, 'Can "Upgrade" only to "WebSocket".')
    if "upgrade" not in (token.strip() for token in (headers.get("Connection") or "").lower().split(",")):
        raise HandshakeError(400, '"Connection" must be "Upgrade".')
    origin = headers.get("Origin") or headers.get("Sec-Websocket-Origin")
    if origin and not origin_allowed(origin, headers.get("Host"), allowed_origins):
        raise HandshakeError(403, "Cross origin websockets not allowed")
    if headers.get("Sec-WebSocket-Version") != "13":
        raise HandshakeError(426, "Upgrade Required", {"Sec-WebSocket-Version": "13"})
    key = headers.get("Sec-WebSocket-Key")
    if not valid_key(key):
        raise HandshakeError(400, "Missing/Invalid WebSocket headers")
    assert key is not None
    return accept_key(key)


def switching_protocols(accept: str) -> bytes:
    """The whole 101 answer."""
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: %s\r\n\r\n" % accept.encode("ascii")
    )


def forwarded_ip(headers: Headers, remote_ip: str) -> str:
    """The client's address behind a proxy, as Tornado's ``xheaders`` reads it."""
    ip = (headers.get("X-Forwarded-For") or remote_ip).split(",")[-1].strip()
    ip = headers.get("X-Real-Ip") or ip
    try:
        ip_address(ip)
    except ValueError:
        return remote_ip
    return ip
