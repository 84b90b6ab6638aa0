"""Every option of webrtc_app, with its default, and the ICE access hooks.

Edit the values below, or override any of them without touching this file:

* environment variable ``WEBRTC_<NAME>`` (``iceServers`` is ``WEBRTC_ICE_SERVERS``), e.g.
  ``WEBRTC_ICE_ACCESS_TOKEN=s3cret``;
* environment variable ``WEBRTC_<NAME>_FILE`` naming a file that holds the value (for secrets
  kept out of the environment; surrounding whitespace is stripped);
* keyword arguments to ``handlers.app.make_app(...)`` when embedding the server.

Lists and dicts are written as JSON in the environment (``ALLOWED_ORIGINS`` also accepts a
comma-separated list); booleans accept 1/0, true/false, yes/no, on/off.

``get_ice_pass()`` and ``has_ice_pass(request_handler)`` are the access policy of the ICE
endpoint, ``has_socket_pass(handler)`` that of the signaling socket. Replace any of them
with a module of your own named by ``POLICY`` (see docs/operations.md), or pass them as
keyword arguments to ``make_app``.
"""

from __future__ import annotations

import hmac
import importlib
import json
import os
import secrets
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

ENV_PREFIX = "WEBRTC_"

# --- ICE (STUN/TURN) servers handed to the pages -------------------------------------------

#: Relative URL of the ICE endpoint the pages POST their token to.
ICE_URL = "/ice_servers"
#: Token a client must POST to ICE_URL. Empty: a random token is generated at start (pages
#: carry it automatically, and the nodes of one Redis backplane agree on one; set it
#: yourself when processes or machines serve the same users without a shared backplane).
ICE_ACCESS_TOKEN = ""
#: ICE servers for RTCPeerConnection: a list of dicts with ``urls`` and, for TURN, either
#: ``username`` and ``credential``, or a ``secret`` (and ``ttl`` in seconds, default one day)
#: shared with the TURN server (coturn's use-auth-secret): the ICE endpoint then hands out
#: time-limited credentials and never the secret. No password is committed here: put TURN
#: entries in WEBRTC_ICE_SERVERS or WEBRTC_ICE_SERVERS_FILE.
iceServers: list[dict[str, Any]] = [{"urls": "stun:stun.l.google.com:19302"}]
#: Dotted name of a module whose get_ice_pass(), has_ice_pass(request_handler) and/or
#: has_socket_pass(handler) replace the defaults below. Empty: use the defaults.
POLICY = ""

# --- Join tokens (docs/operations.md, "On the internet") -------------------------------------

#: Key id (the token's ``kid`` header) -> key, for the join tokens (JWT) the application's
#: backend signs: a shared secret of 32 bytes or more (HS256) or a PEM public key (RSA: RS256,
#: EC: ES256, Ed25519: EdDSA). Set, every signaling socket (/wscall, /wsroom) needs
#: ``token=<JWT>`` in its query (else 4401), and POST ICE_URL a join token in place of the
#: ICE token. Empty: anyone who reaches the server may connect as any id (the original's way).
#: Keep it in WEBRTC_JOIN_TOKEN_KEYS_FILE to rotate keys: SIGHUP reads that file again.
JOIN_TOKEN_KEYS: dict[str, str] = {}
#: When set, a join token's ``aud`` / ``iss`` claim must equal it.
JOIN_TOKEN_AUDIENCE = ""
JOIN_TOKEN_ISSUER = ""
#: Seconds of clock difference allowed when reading ``exp`` and ``nbf`` (at most 30).
JOIN_TOKEN_LEEWAY = 30.0
#: A URL of your backend the pages ask for a fresh join token (POST, with the site's cookies,
#: form fields id and peer_id or room; it answers the token, as text or {"token": ...}), when
#: theirs has expired or their address carries none. Empty: an expired token ends the session.
JOIN_TOKEN_URL = ""

# --- Operators' endpoints -------------------------------------------------------------------

#: Bearer token for /connections (who talks to whom). Empty: /connections answers 404.
ADMIN_TOKEN = ""
#: Serve /metrics (Prometheus text format: counts only, no ids).
METRICS = True
#: Seconds between status lines in the log (0 = none).
STATUS_LOG_INTERVAL = 300.0
#: Query arguments whose values the access log replaces with "***".
LOG_REDACTED_ARGUMENTS: list[str] = ["token", "access_token", "jwt", "auth", "key", "secret", "password", "credential"]

# --- Listening ------------------------------------------------------------------------------

#: Address to listen on ("" = every interface).
HOST = ""
#: Port used when the command line gives none.
PORT = 8888
#: debug, info, warning or error.
LOG_LEVEL = "info"
#: "text" (lines for people) or "json" (one JSON object per line, for a log pipeline).
LOG_FORMAT = "text"
#: Trust X-Forwarded-For / X-Real-Ip and X-Forwarded-Proto / X-Scheme from a reverse proxy
#: (client addresses in the logs, ws/wss). Only behind a proxy that sets them.
XHEADERS = False
#: Serve https and wss directly with this certificate chain and private key (PEM files).
CERTFILE = ""
KEYFILE = ""

# --- Several processes or machines -----------------------------------------------------------

#: Redis URL of the backplane that joins nodes (redis://host:6379/0, or any node of a Redis
#: Cluster; Redis 7 or newer). Empty: one process, registry in memory.
REDIS_URL = ""
#: Prefix of the backplane's keys and channels (several deployments can share one Redis; no
#: braces, which Redis Cluster reads as hash tags).
REDIS_PREFIX = "webrtc:"
#: Seconds after which a node that stopped refreshing its presence (killed, frozen, cut
#: off) is forgotten: its ids stop counting as online within NODE_TTL + NODE_TTL/3.
NODE_TTL = 10.0
#: Seconds within which every message for a socket on another node is delivered or its sender
#: told PEER-UNAVAILABLE, whatever fails meanwhile (a node frozen, killed or cut off from
#: Redis): the receipts and beats of routing/liveness.py are timed from it. 0.5 to 60.
DELIVERY_BOUND = 2.0
#: Worker processes on this machine, sharing the port (needs REDIS_URL when above 1).
PROCESSES = 1

# --- Signaling socket -----------------------------------------------------------------------

#: Origins allowed to open the signaling socket, besides the server's own host (a browser
#: on another site is refused with 403). ``["*"]`` accepts every origin.
ALLOWED_ORIGINS: list[str] = []
#: Longest id or peer_id accepted, in characters.
MAX_ID_LENGTH = 256
#: A regular expression every id and peer_id must match in full. Empty: any printable text.
#: E.g. ``[A-Za-z0-9_.@-]+``.
ID_PATTERN = ""
#: Most sockets one id may hold at once (devices, tabs), on every node of a backplane
#: together; the next gets 4429 TOO-MANY-SOCKETS.
MAX_SOCKETS_PER_ID = 16
#: Most ids in one room (``/wsroom``), on every node of a backplane together; the id that would
#: be one too many is closed with 4409 ROOM-FULL. Six is the mesh the room page carries.
MAX_ROOM_MEMBERS = 6
#: Most sockets this process holds; the next gets 1013 SERVER-FULL. The process also holds no
#: more than its open-file limit allows (raised to the hard limit at start), less
#: RESERVED_DESCRIPTORS kept for pages, Redis, logs and refusing clearly (never more than a
#: quarter of the limit). The effective figure is logged at start and shown in /metrics.
MAX_SOCKETS = 50000
RESERVED_DESCRIPTORS = 100
#: Seconds a client has to send a request's headers (a socket's handshake included), and
#: that an idle keep-alive connection is kept: slow or idle clients cannot hoard descriptors.
HEADER_TIMEOUT = 10.0
#: Seconds a client turned away at the descriptor limit (503) is asked to wait (Retry-After).
RETRY_AFTER = 5
#: Messages per second a socket may send, on average (0 = no limit), and the burst it may
#: send at once. Over it, messages are dropped with a RATE-LIMITED notice; a socket that
#: goes on (another burst's worth dropped before it slows down) is closed with 1008.
RATE_LIMIT = 50.0
RATE_LIMIT_BURST = 200
#: Largest websocket message accepted, in bytes; a bigger one closes the socket with 1009.
MAX_MESSAGE_SIZE = 64 * 1024
#: Bytes a socket may leave unread (a slow or stuck reader) before it is dropped, and the
#: bytes all sockets of the process may leave unread together: past it, the sockets holding
#: most are dropped first.
MAX_UNSENT = 4 * 1024 * 1024
MAX_UNSENT_TOTAL = 64 * 1024 * 1024
#: Connections whose request head is still being read, each holding a descriptor until its
#: head arrives. Past MAX_PENDING_HEADS, or when the process runs out of descriptors, one head
#: that has sent nothing for a second is dropped for each newcomer (the server never stops
#: accepting). From one address (0: no cap; behind a proxy, XHEADERS, only the total counts):
#: past it, its oldest head silent for half of HEADER_TIMEOUT and no head from it in that
#: time, 503 for the next.
MAX_PENDING_HEADS = 10000
MAX_PENDING_HEADS_PER_ADDRESS = 500
#: Largest HTTP request body accepted (pages' forms, ICE tokens), in bytes.
MAX_BODY_SIZE = 64 * 1024
#: A socket silent for WS_PING_INTERVAL seconds is pinged; one that stays silent (no pong,
#: no message) for WS_PING_INTERVAL + WS_PING_TIMEOUT seconds is dropped and leaves the
#: registry at once (0 = no heartbeat).
WS_PING_INTERVAL = 20.0
WS_PING_TIMEOUT = 10.0
#: Seconds SIGTERM/SIGINT waits for open sockets to close before exiting.
SHUTDOWN_TIMEOUT = 5.0


# A random token is made once per process (before any fork), so every app and worker of one
# start agrees on it.
ICE_ACCESS_TOKEN_GENERATED = False
ENVIRONMENT_ERROR = ""
# Option -> the file its value was read from (WEBRTC_<NAME>_FILE), for reread().
_file_sources: dict[str, str] = {}


def _parse(name: str, raw: str, default: Any) -> Any:
    """Turn the text of an environment variable into the type of the option's default."""
    if isinstance(default, bool):
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{name}: expected a boolean, got {raw!r}")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{name}: expected an integer, got {raw!r}") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{name}: expected a number, got {raw!r}") from None
    if isinstance(default, (list, dict)):
        text = raw.strip()
        if isinstance(default, list) and text and text[0] not in "[{":
            return [item.strip() for item in text.split(",") if item.strip()]
        try:
            value = json.loads(text) if text else type(default)()
        except json.JSONDecodeError as exc:
            raise ValueError(f"{name}: invalid JSON ({exc})") from None
        if not isinstance(value, type(default)):
            raise ValueError(f"{name}: expected a JSON {type(default).__name__}")
        return value
    return raw


def env_name(option: str) -> str:
    """The environment variable that overrides ``option`` (``iceServers`` -> ``WEBRTC_ICE_SERVERS``)."""
    return ENV_PREFIX + ("ICE_SERVERS" if option == "iceServers" else option)


def option_names() -> list[str]:
    """Names of every option, in the order they are defined above."""
    return [
        name
        for name, value in globals().items()
        if (name.isupper() or name == "iceServers")
        and not name.startswith("_")
        and name not in ("ENV_PREFIX", "ICE_ACCESS_TOKEN_GENERATED", "ENVIRONMENT_ERROR", "HOOKS")
        and not callable(value)
    ]


def _read_file(var: str, path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as exc:
        raise ValueError(f"{var}_FILE: cannot read {path}: {exc.strerror}") from None


def from_environment(environ: Mapping[str, str], sources: dict[str, str] | None = None) -> dict[str, Any]:
    """Values of the options that ``environ`` overrides (``WEBRTC_X`` or ``WEBRTC_X_FILE``);
    ``sources`` gets the file each value read from a file came from."""
    values: dict[str, Any] = {}
    for option in option_names():
        var = env_name(option)
        raw = environ.get(var)
        if raw is None and environ.get(var + "_FILE"):
            path = environ[var + "_FILE"]
            raw = _read_file(var, path)
            if sources is not None:
                sources[option] = path
        if raw is not None:
            values[option] = _parse(var, raw, globals()[option])
    return values


def reread(option: str) -> tuple[str, Any] | None:
    """The file ``option`` was read from at start and its value now (SIGHUP), or None when the
    value did not come from a file (then a running process cannot see it change); ValueError
    when the file cannot be read or parsed."""
    path = _file_sources.get(option)
    if path is None:
        return None
    var = env_name(option)
    return path, _parse(var + "_FILE", _read_file(var, path), globals()[option])


def _apply_environment() -> None:
    global ICE_ACCESS_TOKEN, ICE_ACCESS_TOKEN_GENERATED, ENVIRONMENT_ERROR
    try:
        globals().update(from_environment(os.environ, _file_sources))
    except ValueError as exc:
        # Reported by resolve(), so the command line can print one clear line.
        ENVIRONMENT_ERROR = str(exc)
    if not ICE_ACCESS_TOKEN:
        ICE_ACCESS_TOKEN = secrets.token_urlsafe(24)
        ICE_ACCESS_TOKEN_GENERATED = True


# --- The ICE access policy (override points) ------------------------------------------------


def get_ice_pass() -> str:
    """Token to embed in a page; called each time a page is rendered.

    Default: the static ``ICE_ACCESS_TOKEN``. Override it to rotate tokens or to ask a
    database, redis, etc.
    """
    return ICE_ACCESS_TOKEN


def has_socket_pass(handler: Any) -> bool:
    """Whether a signaling socket may open (called after the ids are checked).

    ``handler`` is the signaling socket, with the names of Tornado's handlers: its query
    arguments (``handler.get_query_argument("token", "")``), cookies (``get_cookie``) and
    ``handler.request`` (headers, remote_ip, uri). It may also be a coroutine function. A
    refused socket is closed with 4403 FORBIDDEN. Default: allow.
    """
    return True


def has_ice_pass(request_handler: Any) -> bool:
    """Whether a POST to ``ICE_URL`` may read the ICE servers.

    ``request_handler`` is the Tornado ``RequestHandler``; the token is the request body.
    Default: the body equals the token the active ``get_ice_pass`` hands out
    (``request_handler.get_ice_pass()``), compared in constant time.
    """
    expected = request_handler.get_ice_pass().encode("utf-8")
    return hmac.compare_digest(request_handler.request.body, expected)


IcePassGetter = Callable[[], str]
IcePassChecker = Callable[[Any], bool]
HOOKS = ("get_ice_pass", "has_ice_pass", "has_socket_pass")


def load_policy(dotted: str) -> dict[str, Callable[..., Any]]:
    """The hooks defined by the module named ``dotted`` (a ``POLICY`` value)."""
    try:
        module = importlib.import_module(dotted)
    except ImportError as exc:
        raise ValueError(f"POLICY: cannot import {dotted!r}: {exc}") from None
    hooks = {name: getattr(module, name) for name in HOOKS if callable(getattr(module, name, None))}
    if not hooks:
        raise ValueError(f"POLICY: {dotted!r} defines none of {', '.join(HOOKS)}")
    return hooks


def resolve(**overrides: Any) -> SimpleNamespace:
    """A snapshot of every option (this module's values, then ``overrides``) plus the hooks.

    Each app gets its own snapshot, so tests and embedders can run apps with different
    options side by side. Hooks come from, in order of precedence: ``overrides``, the
    ``POLICY`` module, this module.
    """
    if ENVIRONMENT_ERROR:
        raise ValueError(ENVIRONMENT_ERROR)
    names = option_names()
    unknown = sorted(set(overrides) - set(names) - set(HOOKS))
    if unknown:
        raise TypeError(f"unknown setting(s): {', '.join(unknown)}")
    config = SimpleNamespace(**{name: overrides.get(name, globals()[name]) for name in names})
    hooks: dict[str, Callable[..., Any]] = {name: globals()[name] for name in HOOKS}
    if "ICE_ACCESS_TOKEN" in overrides and hooks["get_ice_pass"] is _default_get_ice_pass:
        # The default policy hands out this app's token, not the module's.
        hooks["get_ice_pass"] = lambda: config.ICE_ACCESS_TOKEN
    if config.POLICY:
        hooks.update(load_policy(config.POLICY))
    hooks.update({name: overrides[name] for name in HOOKS if name in overrides})
    config.__dict__.update(hooks)
    return config


_default_get_ice_pass = get_ice_pass
_apply_environment()
