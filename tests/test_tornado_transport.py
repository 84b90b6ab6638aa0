"""The signaling suites again over Tornado's own transport (handlers/fastws.py).

Over plain TCP the real server, and the in-process suites, take the lean transport
(handlers/leanws.py). Tornado's carries the signaling socket over TLS, on a connection
that served a page first, and for every handshake the lean path hands over: the same
suites prove it keeps the same rules.
"""

from __future__ import annotations

import test_caller
import test_hardening
import test_signaling


class TestBadRequestsOverTornado(test_signaling.TestBadRequests):
    transport = "tornado"


class TestDeliveryOverTornado(test_signaling.TestDelivery):
    transport = "tornado"


class TestFramesOverTornado(test_signaling.TestFrames):
    transport = "tornado"


class TestOriginsOverTornado(test_signaling.TestOrigins):
    transport = "tornado"


class TestCallerAppOverTornado(test_caller.TestCallerApp):
    transport = "tornado"


class TestSocketLimitsOverTornado(test_hardening.TestSocketLimits):
    transport = "tornado"


class TestSocketPolicyModuleOverTornado(test_hardening.TestSocketPolicyModule):
    transport = "tornado"


class TestAsyncSocketHookOverTornado(test_hardening.TestAsyncSocketHook):
    transport = "tornado"


class TestRateLimitOverTornado(test_hardening.TestRateLimit):
    transport = "tornado"


class TestHeartbeatOverTornado(test_hardening.TestHeartbeat):
    transport = "tornado"
