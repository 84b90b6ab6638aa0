"""The ICE endpoint: POST the page's token, get the STUN/TURN servers."""

from __future__ import annotations

from handlers import ApiError, JsonHandler


class IceServersHandler(JsonHandler):
    """``POST ICE_URL`` with the access token as body answers the ``iceServers`` list."""

    def get_ice_pass(self) -> str:
        """The token the active policy hands out (for ``has_ice_pass`` implementations)."""
        return self.application.config.get_ice_pass()  # type: ignore[attr-defined]

    def post(self) -> None:
        config = self.application.config  # type: ignore[attr-defined]
        if not config.has_ice_pass(self):
            raise ApiError(403, "wrong or missing ICE access token")
        # Credentials: never cached by a browser or a proxy.
        self.set_header("Cache-Control", "no-store")
        self.send_json(config.iceServers)
