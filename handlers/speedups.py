"""The C unmasking the protocol core uses when it can: Tornado's ``tornado.util._websocket_mask``
(a private name, checked here at import; it falls back to pure Python when Tornado's speedups
are not built). The core itself (handlers/protocol/) has a pure-Python one, about seven times
slower per message, and imports nothing of Tornado."""

from __future__ import annotations

from collections.abc import Callable

import tornado
import tornado.util

from handlers.protocol.frames import python_unmask

#: The private names of Tornado used here (CI runs the websocket suites on the lowest and the
#: highest Tornado that pip-requirements.txt allows).
TORNADO_PRIVATE_NAMES = ("tornado.util._websocket_mask",)


def _tornado_unmask() -> Callable[[bytes, bytes], bytes]:
    unmask = getattr(tornado.util, "_websocket_mask", None)
    if not callable(unmask) or unmask(b"\x01\x02\x03\x04", b"\x00\x00\x00\x00\x00") != b"\x01\x02\x03\x04\x01":
        raise ImportError(
            f"handlers/speedups.py relies on tornado.util._websocket_mask(mask, data), which Tornado {tornado.version} "
            "does not have as expected: install a Tornado in the range of pip-requirements.txt"
        )
    return unmask


_unmask = _tornado_unmask()
assert _unmask(b"abcd", b"0123456789") == python_unmask(b"abcd", b"0123456789")
#: For a connection class: ``unmask = speedups.unmask`` (as Connection's own, a static method).
unmask = staticmethod(_unmask)
