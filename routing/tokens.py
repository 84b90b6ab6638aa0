"""Join tokens: a signaling socket, a room or TURN only for whom the operator's backend let in.

A join token is a JWT the application's backend signs (docs/operations.md, "On the internet").
``JOIN_TOKEN_KEYS`` maps key ids (the token's ``kid`` header) to keys: a shared secret for
HS256, or a PEM public key (RSA: RS256; EC P-256/P-384/P-521: ES256/ES384/ES512; Ed25519 or
Ed448: EdDSA). Each key admits one algorithm, the one that fits it, so neither ``none`` nor an
HMAC signed with a public key's PEM can pass. :class:`JoinTokens` checks a token against what
a socket asks for; PyJWT does the parsing and the signatures, nothing here reads a JWT by hand.

Free of Tornado, as the rest of routing/: the socket's rules (handlers/signaling.py) and the
ICE endpoint (handlers/ice.py) ask it; webrtc_server.py's ``token`` command mints with it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

#: Close code of a socket refused for its join token, and the three reasons.
TOKEN_CODE = 4401
TOKEN_REQUIRED, TOKEN_INVALID, TOKEN_EXPIRED = "TOKEN-REQUIRED", "TOKEN-INVALID", "TOKEN-EXPIRED"
#: Longest token accepted, in characters (a URL's query carries it).
MAX_TOKEN_LENGTH = 4096
#: Shortest shared secret accepted, in bytes (RFC 7518: a key as long as the hash, 256 bits).
MIN_SECRET_BYTES = 32
#: Most seconds of clock difference ``exp`` and ``nbf`` may be read with.
MAX_LEEWAY = 30.0
#: Lifetime of a token the ``token`` command mints when it is given none (seconds).
DEFAULT_TTL = 3600

if TYPE_CHECKING:
    from jwt.types import Options

_CURVES = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


class TokenRefused(Exception):
    """A token that does not admit what was asked: ``reason`` is the close reason (one of the
    three above), ``why`` says what is wrong for the log (never the token itself)."""

    def __init__(self, reason: str, why: str) -> None:
        super().__init__(f"{reason}: {why}")
        self.reason = reason
        self.why = why


@dataclass(frozen=True)
class Key:
    """One entry of JOIN_TOKEN_KEYS: its id, the one algorithm it admits, the key PyJWT verifies
    with (bytes for a secret, a public key object otherwise)."""

    kid: str
    algorithm: str
    key: Any

    @property
    def shared(self) -> bool:
        return self.algorithm == "HS256"


@dataclass(frozen=True)
class Grant:
    """What a valid token lets in: its subject (the socket's id), when it expires (Unix time),
    and the ``peer`` or ``room`` it is limited to (None: not limited)."""

    sub: str
    exp: float
    peer: str | None = None
    room: str | None = None


def parse_key(kid: str, value: Any) -> Key:
    """The Key for one entry of JOIN_TOKEN_KEYS; ValueError says what is wrong with it."""
    where = f"JOIN_TOKEN_KEYS[{kid!r}]"
    if not isinstance(kid, str) or not kid or len(kid) > 256:
        raise ValueError(f"{where}: a key id must be a non-empty text of at most 256 characters")
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: expected a shared secret or a PEM public key, as text")
    text = value.strip()
    if not text.startswith("-----BEGIN"):
        if len(text.encode("utf-8")) < MIN_SECRET_BYTES:
            raise ValueError(f"{where}: a shared secret needs at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -base64 32`)")
        return Key(kid, "HS256", text.encode("utf-8"))
    if "PRIVATE KEY" in text.split("\n", 1)[0]:
        raise ValueError(f"{where}: a private key; give the server the public key only (`openssl pkey -pubout`)")
    try:
        public = load_pem_public_key(text.encode())
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: not a PEM public key ({exc})") from None
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < 2048:
            raise ValueError(f"{where}: an RSA key needs at least 2048 bits, this one has {public.key_size}")
        return Key(kid, "RS256", public)
    if isinstance(public, ec.EllipticCurvePublicKey):
        algorithm = _CURVES.get(public.curve.name)
        if algorithm is None:
            raise ValueError(f"{where}: curve {public.curve.name} is not one of P-256, P-384, P-521")
        return Key(kid, algorithm, public)
    if isinstance(public, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return Key(kid, "EdDSA", public)
    raise ValueError(f"{where}: a {type(public).__name__}, not an RSA, EC or Ed25519/Ed448 public key")


def parse_keys(value: Mapping[str, Any]) -> dict[str, Key]:
    """Every key of a JOIN_TOKEN_KEYS value (a dict from kid to key text)."""
    if not isinstance(value, Mapping):
        raise ValueError("JOIN_TOKEN_KEYS: expected a JSON object from key id to key")
    return {kid: parse_key(kid, key) for kid, key in value.items()}


def _text_claim(payload: dict[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise TokenRefused(TOKEN_INVALID, f"claim {name!r} is not a text")
    return value


class JoinTokens:
    """The keys a server accepts join tokens from, and the checks (one per application; the
    keys change in place on :meth:`reload`, so every socket context sees the new ones)."""

    def __init__(self, keys: dict[str, Key], audience: str = "", issuer: str = "", leeway: float = MAX_LEEWAY) -> None:
        if not keys:
            raise ValueError("JoinTokens needs at least one key")
        if not 0 <= leeway <= MAX_LEEWAY:
            raise ValueError(f"JOIN_TOKEN_LEEWAY: expected 0 to {MAX_LEEWAY:g} seconds, got {leeway:g}")
        self.keys = keys
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway

    @classmethod
    def from_config(cls, config: Any) -> JoinTokens | None:
        """The application's join tokens, or None when JOIN_TOKEN_KEYS is empty (off)."""
        if not config.JOIN_TOKEN_KEYS:
            return None
        return cls(
            parse_keys(config.JOIN_TOKEN_KEYS), config.JOIN_TOKEN_AUDIENCE, config.JOIN_TOKEN_ISSUER, config.JOIN_TOKEN_LEEWAY
        )

    def reload(self, keys: dict[str, Key]) -> None:
        """Take a new set of keys (rotation): tokens of a removed key are refused from now on;
        the sockets they opened stay open."""
        if not keys:
            raise ValueError("JOIN_TOKEN_KEYS may not become empty while the server runs (restart it to turn join tokens off)")
        self.keys = keys

    def check(self, token: str | None, sub: str | None, peer: str | None = None, room: str | None = None) -> Grant:
        """The grant of ``token`` if it admits id ``sub`` (None: any) talking to ``peer`` (a
        ``/wscall`` socket; "" for anyone) or in ``room`` (a ``/wsroom`` socket); TokenRefused
        otherwise. With neither ``peer`` nor ``room`` (the ICE endpoint) any valid token does."""
        if not token:
            raise TokenRefused(TOKEN_REQUIRED, "no join token")
        if len(token) > MAX_TOKEN_LENGTH:
            raise TokenRefused(TOKEN_INVALID, f"token over {MAX_TOKEN_LENGTH} characters")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenRefused(TOKEN_INVALID, f"not a JWT ({exc})") from None
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRefused(TOKEN_INVALID, "no 'kid' header")
        key = self.keys.get(kid)
        if key is None:
            raise TokenRefused(TOKEN_INVALID, f"unknown key id {kid[:64]!r}")
        algorithm = header.get("alg")
        if algorithm != key.algorithm:
            raise TokenRefused(TOKEN_INVALID, f"key {kid!r} takes {key.algorithm}, the token says {str(algorithm)[:16]!r}")
        options: Options = {"require": ["sub", "exp"], "verify_aud": bool(self.audience)}
        try:
            payload = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                options=options,
                audience=self.audience or None,
                issuer=self.issuer or None,
                leeway=self.leeway,
            )
        except jwt.ExpiredSignatureError:
            raise TokenRefused(TOKEN_EXPIRED, "the token expired") from None
        except jwt.PyJWTError as exc:
            raise TokenRefused(TOKEN_INVALID, str(exc)[:200] or type(exc).__name__) from None
        granted = _text_claim(payload, "sub")
        if not granted:
            raise TokenRefused(TOKEN_INVALID, "claim 'sub' is empty")
        token_peer = _text_claim(payload, "peer")
        token_room = _text_claim(payload, "room")
        if sub is not None and granted != sub:
            raise TokenRefused(TOKEN_INVALID, "the token is for another id")
        if room is not None:
            if token_room is None:
                raise TokenRefused(TOKEN_INVALID, "the token is not for a room")
            if token_room != room:
                raise TokenRefused(TOKEN_INVALID, "the token is for another room")
            if token_peer is not None:
                raise TokenRefused(TOKEN_INVALID, "the token is for a call, not a room")
        elif peer is not None:
            if token_room is not None:
                raise TokenRefused(TOKEN_INVALID, "the token is for a room, not a call")
            if token_peer is not None and token_peer != peer:
                raise TokenRefused(TOKEN_INVALID, "the token is for a call with another peer")
        return Grant(granted, float(payload["exp"]), token_peer, token_room)

    def mint(
        self,
        sub: str,
        peer: str | None = None,
        room: str | None = None,
        ttl: float = DEFAULT_TTL,
        kid: str | None = None,
        now: float | None = None,
    ) -> str:
        """A token for ``sub`` signed with a shared secret (the ``token`` command, tests); a
        backend mints its own the same way (docs/operations.md)."""
        shared = [key for key in self.keys.values() if key.shared]
        if kid is not None:
            key = self.keys.get(kid)
            if key is None:
                raise ValueError(f"no key {kid!r} in JOIN_TOKEN_KEYS")
            if not key.shared:
                raise ValueError(f"key {kid!r} is a public key: only its private key's owner can sign ({key.algorithm})")
        elif len(shared) == 1:
            key = shared[0]
        elif not shared:
            raise ValueError("JOIN_TOKEN_KEYS has no shared secret to sign with (public keys only verify)")
        else:
            raise ValueError(f"JOIN_TOKEN_KEYS has {len(shared)} shared secrets: say which with --kid")
        if ttl <= 0:
            raise ValueError("the lifetime must be above 0 seconds")
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = {"sub": sub, "iat": issued, "exp": issued + int(ttl), "jti": uuid.uuid4().hex}
        if peer is not None:
            claims["peer"] = peer
        if room is not None:
            claims["room"] = room
        if self.audience:
            claims["aud"] = self.audience
        if self.issuer:
            claims["iss"] = self.issuer
        return jwt.encode(claims, key.key, algorithm=key.algorithm, headers={"kid": key.kid})
