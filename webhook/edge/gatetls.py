"""The TLS protocol of the gate's connections: asyncio's, reading through one buffer its listener's connections share.

asyncio gives every TLS connection its own read buffer (256 KiB by default), held for as long as the connection is
open; `webhook.edge.gate` serves hundreds of mostly idle connections, which need none.
"""

from __future__ import annotations

import asyncio
from asyncio import sslproto
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from webhook.edge.gate import Slot

# The TLS read buffer, one per listener and shared by all its connections (asyncio gives each connection its
# own 256 KiB): a socket read goes through it and into that connection's TLS state at once, so no connection
# holds it between reads.
TLS_READ_BUFFER = 64 * 1024


class SharedBufferSSLProtocol(sslproto.SSLProtocol):
    """asyncio's TLS protocol reading through its listener's one buffer, releasing its gate slot at the end.

    asyncio fills the buffer from `get_buffer` and hands it to `buffer_updated` in the same call
    (selector_events), which copies it into this connection's TLS state: no two connections use it at once.
    """

    max_size = TLS_READ_BUFFER  # also the most plaintext taken from TLS per read

    def __init__(self, slot: Slot, read_buffer: memoryview, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ferry_slot = slot
        self._ssl_buffer = bytearray()  # asyncio's own, of max_size bytes: dropped at once for the shared one
        self._ssl_buffer_view = read_buffer
        self._ferry_flight_sent = False  # the server's handshake messages went out: the client has to answer

    # asyncio's own steps of the handshake (Python 3.11's sslproto; not in typeshed), watched for the moment the
    # server has sent its part and waits for the client: the gate's handshake turn passes on then.
    def _in_handshake(self) -> bool:
        return getattr(self, "_state", None) is sslproto.SSLProtocolState.DO_HANDSHAKE

    def _process_outgoing(self) -> None:
        if self._in_handshake() and self._outgoing.pending:  # type: ignore[attr-defined]
            self._ferry_flight_sent = True
        super()._process_outgoing()  # type: ignore[misc]

    def _do_handshake(self) -> None:
        super()._do_handshake()  # type: ignore[misc]
        if self._in_handshake() and self._ferry_flight_sent:
            self._ferry_slot.gate._await_client(self._ferry_slot)

    def get_buffer(self, n: int) -> memoryview:
        return self._ssl_buffer_view

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._ferry_slot.transport = transport
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._ferry_slot.release()
        super().connection_lost(exc)

    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        self._ferry_slot.gate._end_turn(self._ferry_slot)
        super()._on_handshake_complete(handshake_exc)
