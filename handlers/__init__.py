"""The web side of webrtc_app.

* ``handlers.protocol``: the signaling socket's websocket protocol, sans I/O and free of
  Tornado (frames, the connection's state machine, the handshake's checks);
* the signaling socket: its rules (``signaling.py``) and the two transports that drive the
  one protocol core, ``leanws.py`` (the raw socket, the handshake parsed by httptools) and
  ``streamws.py`` (Tornado's IOStream, for TLS and reused connections);
* ``frontdoor.py``: accepting connections, also out of descriptors;
* the Tornado glue: ``app.py`` (the application and its factory), pages, the ICE endpoint
  and the operators' endpoints, each a thin adapter.

This package's own module imports nothing, so ``handlers.protocol`` stays free of Tornado.
"""
