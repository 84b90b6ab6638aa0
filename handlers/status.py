"""Operators' endpoints."""

from __future__ import annotations

import hmac

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from handlers.api import ApiError, JsonHandler
from routing import page_of_ids

#: Ids per page of ``GET /connections`` without an id, by default and at most.
IDS_PER_PAGE, MAX_IDS_PER_PAGE = 100, 1000


class ConnectionsHandler(JsonHandler):
    """``GET /connections?id=X``: ``[{"peer": ..., "session": ...}]`` for each socket of X.
    ``GET /connections[?after=ID][&limit=N]``: who is online, a page of ids in order,
    ``{"ids": [{"id": ..., "sockets": n}], "next": ID or null}`` (``next`` is the ``after`` of
    the next page).

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
        router = self.application.router
        my_id = self.get_query_argument("id", None)
        if my_id is not None:
            if not my_id:
                raise ApiError(400, "empty id")
            self.send_json(await router.connections(my_id))
            return
        text = self.get_query_argument("limit", str(IDS_PER_PAGE))
        if not text.isdigit() or not 1 <= int(text) <= MAX_IDS_PER_PAGE:
            raise ApiError(400, f"limit must be a number from 1 to {MAX_IDS_PER_PAGE}")
        self.send_json(page_of_ids(await router.online_ids(), self.get_query_argument("after", ""), int(text)))


class HealthHandler(JsonHandler):
    """``GET /healthz``: liveness, ``{"status": "ok", "ready": true}`` while the process serves
    requests (200: a node cut off from Redis still serves its local conversations; restarting
    it would end them). ``ready`` is false, with ``why``, while the backplane is away or this
    node hears nothing from it; ``GET /healthz?ready=1`` then answers 503, for a load
    balancer's readiness check."""

    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        figures = self.application.router.backplane()
        why = ""
        if figures is not None and not figures.connected:
            why = "not connected to Redis"
        elif figures is not None and figures.cut_off:
            why = "hears nothing from Redis (cut off)"
        body: dict[str, object] = {"status": "ok", "ready": not why}
        if why:
            body["why"] = why
        self.send_json(body, 503 if why and self.get_query_argument("ready", "") else 200)


class MetricsHandler(JsonHandler):
    """``GET /metrics``: counters in Prometheus' text format (counts only: no ids, no bodies);
    under ``--processes N`` those of every worker, each series with a ``worker`` label."""

    async def get(self) -> None:
        registry = self.application.metrics_registry
        assert registry is not None  # the route exists only with METRICS on
        workers = self.application.workers
        # Under --processes, every worker's series, labelled by worker (services/workers.py).
        body = await workers.exposition() if workers is not None else generate_latest(registry)
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(body)
