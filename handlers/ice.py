"""The ICE endpoint: POST the page's token, get the STUN/TURN servers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from typing import Any

import settings
from handlers.api import ApiError, JsonHandler
from routing.tokens import TokenRefused

log = logging.getLogger(__name__)

#: Lifetime of TURN REST credentials when an entry gives no ``ttl`` (seconds).
DEFAULT_TURN_TTL = 86400


def turn_credentials(
    secret: str, user: str, ttl: int, now: float | None = None, not_after: float | None = None
) -> dict[str, str]:
    """Time-limited TURN credentials as coturn's ``use-auth-secret`` expects them.

    username ``<expiry unix time>:<user>``, credential base64(HMAC-SHA1(secret, username));
    the expiry is ``ttl`` seconds from now, and no later than ``not_after`` (a join token's exp).
    """
    expiry = int(time.time() if now is None else now) + ttl
    if not_after is not None:
        expiry = min(expiry, int(not_after))
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return {"username": username, "credential": base64.b64encode(digest).decode("ascii")}


def public_ice_servers(servers: list[dict[str, Any]], user: str, not_after: float | None = None) -> list[dict[str, Any]]:
    """The list to hand a client: entries with a shared ``secret`` get fresh credentials
    instead (expiring no later than ``not_after``), and the secret never leaves the server."""
    answer = []
    for server in servers:
        if "secret" in server:
            entry = {key: value for key, value in server.items() if key not in ("secret", "ttl")}
            ttl = int(server.get("ttl", DEFAULT_TURN_TTL))
            entry.update(turn_credentials(str(server["secret"]), user, ttl, not_after=not_after))
            answer.append(entry)
        else:
            answer.append(server)
    return answer


class IceServersHandler(JsonHandler):
    """``POST ICE_URL`` with the access token as body answers the ``iceServers`` list.

    ``?id=`` (the pages send their id) names the user in TURN REST credentials. With join
    tokens on (JOIN_TOKEN_KEYS), the body is a join token instead: refused with 401, the
    credentials name its ``sub`` and expire no later than it; a ``has_ice_pass`` of a policy
    module is asked too (the default one, which compares the ICE token, is not).
    """

    def get_ice_pass(self) -> str:
        """The token the active policy hands out (for ``has_ice_pass`` implementations)."""
        return self.application.config.get_ice_pass()

    def post(self) -> None:
        config = self.application.config
        tokens = self.application.join_tokens
        not_after = None
        if tokens is not None:
            try:
                grant = tokens.check(self.request.body.decode("utf-8", "replace").strip(), None)
            except TokenRefused as refused:
                log.info("ICE servers refused (%s) to %s", refused.why, self.request.remote_ip)
                raise ApiError(
                    401, f"join token refused: {refused.why}", {"WWW-Authenticate": "Bearer"}, refused.reason.lower()
                ) from None
            user, not_after = grant.sub, grant.exp
            if config.has_ice_pass is not settings.has_ice_pass and not config.has_ice_pass(self):
                raise ApiError(403, "has_ice_pass said no")
        else:
            if not config.has_ice_pass(self):
                raise ApiError(403, "wrong or missing ICE access token")
            user = self.get_query_argument("id", "")[: config.MAX_ID_LENGTH] or "webrtc_app"
        # Credentials: never cached by a browser or a proxy.
        self.set_header("Cache-Control", "no-store")
        self.send_json(public_ice_servers(config.iceServers, user, not_after))
