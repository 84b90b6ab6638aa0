"""An ICE access policy that rotates its token, as a deployment might (used by the tests).

Name it with ``POLICY=rotating_token`` (the module must be importable). ``rotate()``
starts a new token; the previous one stays valid so pages rendered just before still work.
"""

import hmac
import secrets

_tokens = [secrets.token_urlsafe(16)]


def rotate() -> str:
    _tokens.append(secrets.token_urlsafe(16))
    del _tokens[:-2]
    return _tokens[-1]


def get_ice_pass() -> str:
    return _tokens[-1]


def has_ice_pass(request_handler) -> bool:
    offered = request_handler.request.body
    return any(hmac.compare_digest(offered, token.encode()) for token in _tokens)
