"""A socket policy for the tests of the lean transport: a session cookie, if any, must be the
right one (and the policy sees the request's headers)."""


def has_socket_pass(handler) -> bool:
    return handler.get_cookie("session") in (None, "let-me-in") and "Host" in handler.request.headers
