"""The ICE endpoint: POST the page's token, get the STUN/TURN servers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from handlers.api import ApiError, JsonHandler

#: Lifetime of TURN REST credentials when an entry gives no ``ttl`` (seconds).
DEFAULT_TURN_TTL = 86400


def turn_credentials(secret: str, user: str, ttl: int, now: float | None = None) -> dict[str, str]:
    """Time-limited TURN credentials as coturn's ``use-auth-secret`` expects them.

    username ``<expiry unix time>:<user>``, credential base64(HMAC-SHA1(secret, username)).
    """
    expiry = int(time.time() if now is None else now) + ttl
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return {"username": username, "credential": base64.b64encode(digest).decode("ascii")}


def public_ice_servers(servers: list[dict[str, Any]], user: str) -> list[dict[str, Any]]:
    """The list to hand a client: entries with a shared ``secret`` get fresh credentials
    instead, and the secret never leaves the server."""
    answer = []
    for server in servers:
        if "secret" in server:
            entry = {key: value for key, value in server.items() if key not in ("secret", "ttl")}
            entry.update(turn_credentials(str(server["secret"]), user, int(server.get("ttl", DEFAULT_TURN_TTL))))
            answer.append(entry)
        else:
            answer.append(server)
    return answer


class IceServersHandler(JsonHandler):
    """``POST ICE_URL`` with the access token as body answers the ``iceServers`` list.

    ``?id=`` (the pages send their id) names the user in TURN REST credentials.
    """

    def get_ice_pass(self) -> str:
        """The token the active policy hands out (for ``has_ice_pass`` implementations)."""
        return self.application.config.get_ice_pass()

    def post(self) -> None:
        config = self.application.config
        if not config.has_ice_pass(self):
            raise ApiError(403, "wrong or missing ICE access token")
        user = self.get_query_argument("id", "")[: config.MAX_ID_LENGTH] or "webrtc_app"
        # Credentials: never cached by a browser or a proxy.
        self.set_header("Cache-Control", "no-store")
        self.send_json(public_ice_servers(config.iceServers, user))
