"""The signaling socket's websocket protocol, sans I/O and free of Tornado (a test says so).

* ``frames.py``: opcodes, close codes, the frames the server writes, ProtocolError;
* ``connection.py``: one connection's state machine after the handshake: bytes in, events
  and bytes out, the limits on what it may hold;
* ``handshake.py``: what a request must carry to be upgraded, the 101, and the neutral
  ``Request`` the socket's rules and the ``has_socket_pass`` hooks read.

The transports (handlers/leanws.py, handlers/streamws.py) do the I/O around it; the socket's
rules (handlers/signaling.py) decide what a message does. Modelled on the websockets
library's sans-I/O ``Protocol``, whose ``ServerProtocol`` the tests fuzz it against.
"""
