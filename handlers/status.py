"""Operators' endpoints."""

from __future__ import annotations

import hmac

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from handlers import ApiError, JsonHandler


class ConnectionsHandler(JsonHandler):
    """``GET /connections?id=X``: ``[{"peer": ..., "session": ...}]`` for each socket of X.

    It reveals who talks to whom, so it needs ``Authorization: Bearer <ADMIN_TOKEN>``;
    with no ADMIN_TOKEN configured the route does not exist (404).
    """

    async def get(self) -> None:
        admin_token = self.application.config.ADMIN_TOKEN
        if not admin_token:
            raise ApiError(404, "not found")
        scheme, _, credential = self.request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(credential.strip().encode("utf-8"), admin_token.encode("utf-8")):
            raise ApiError(401, "an admin bearer token is required", {"WWW-Authenticate": 'Bearer realm="webrtc_app"'})
        my_id = self.get_query_argument("id", "")
        if not my_id:
            raise ApiError(400, "missing id")
        self.send_json(await self.application.router.connections(my_id))


class HealthHandler(JsonHandler):
    """``GET /healthz``: liveness, ``{"status": "ok"}`` while the process serves requests."""

    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.send_json({"status": "ok"})


class MetricsHandler(JsonHandler):
    """``GET /metrics``: counters in Prometheus' text format (counts only: no ids, no bodies)."""

    def get(self) -> None:
        registry = self.application.metrics_registry
        assert registry is not None  # the route exists only with METRICS on
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(registry))
