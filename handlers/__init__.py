"""Tornado glue: the pages, the ICE endpoint, the signaling socket and the operators' endpoints.

Each handler is a thin adapter; the routing rules live in the ``routing`` package and every
option in ``settings.py`` (reached through ``self.application.config``).
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from tornado.web import HTTPError, RequestHandler


class JsonHandler(RequestHandler):
    """A handler whose answers, errors included, are JSON."""

    def send_json(self, value: Any, status: int = 200) -> None:
        """Finish with ``value`` as JSON (lists too, which ``write`` refuses)."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(value))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = exc.log_message if isinstance(exc, HTTPError) and exc.log_message else self._reason
        try:
            error = HTTPStatus(status_code).phrase.lower().replace(" ", "-")
        except ValueError:
            error = "error"
        self.send_json({"error": error, "message": message}, status_code)
