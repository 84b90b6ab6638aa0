"""A socket policy for the tests: /wscall needs ?token=let-me-in (a deployment would check a
JWT or a session cookie the same way)."""

import hmac


def has_socket_pass(handler) -> bool:
    offered = handler.get_query_argument("token", "")
    return hmac.compare_digest(offered.encode(), b"let-me-in")
