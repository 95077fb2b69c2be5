"""The HTTP edge: the TLS server, its connection guards, the ASGI app and its metrics."""
