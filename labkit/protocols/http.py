"""HTTP/1.x in captures: a request or status line names the packet that starts it.

    >>> HTTPView().describe(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n", pkt)
    'GET / HTTP/1.1'

Recognised by content on any port: a payload that starts like a request line or a
status line.  Bodies and later pieces of a message stay plain bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from labkit.protocols.base import ProtocolView

if TYPE_CHECKING:
    from scapy.packet import Packet

__all__ = ["HTTPView"]

STARTS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"HTTP/1.")


class HTTPView(ProtocolView):
    name = "HTTP"
    needs_packet = False  # the payload's first line says it all

    def recognises(self, payload: bytes, pkt: Packet | None) -> bool:
        return payload.startswith(STARTS)

    def might_recognise(self, payload: bytes, proto: str) -> bool:
        return payload.startswith(STARTS)

    def describe(self, payload: bytes, pkt: Packet | None) -> str:
        return payload.split(b"\r\n", 1)[0].decode("latin-1")
