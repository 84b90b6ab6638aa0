"""Background duties of a running server, one module each: heartbeat, metrics, status log."""
