"""The JSON API's base handler (the ICE endpoint, the operators' endpoints): answers and
errors as JSON."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from tornado.web import HTTPError, RequestHandler

if TYPE_CHECKING:  # the app imports the handlers, not the other way round
    from handlers.app import WebRTCApplication


class ApiError(HTTPError):
    """An HTTP error with a message for the JSON body and headers to send with it."""

    def __init__(self, status_code: int, message: str, headers: dict[str, str] | None = None, error: str = "") -> None:
        super().__init__(status_code, message.replace("%", "%%"))
        self.message = message
        self.headers = headers or {}
        #: The body's "error" word; "" for the status' phrase ("forbidden").
        self.error = error


class JsonHandler(RequestHandler):
    """A handler whose answers, errors included, are JSON."""

    application: WebRTCApplication

    def send_json(self, value: Any, status: int = 200) -> None:
        """Finish with ``value`` as JSON (lists too, which ``write`` refuses)."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(value))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = exc.message if isinstance(exc, ApiError) else self._reason
        for name, value in getattr(exc, "headers", {}).items():
            self.set_header(name, value)
        try:
            error = HTTPStatus(status_code).phrase.lower().replace(" ", "-")
        except ValueError:
            error = "error"
        error = getattr(exc, "error", "") or error
        self.send_json({"error": error, "message": message}, status_code)
