"""Protocols as captures show them: the registry of protocol views, in a fixed order.

Each protocol is one :class:`~labkit.protocols.base.ProtocolView` subclass in its own
module, saying how to recognise it, describe a payload, label a ladder arrow and
analyse a whole conversation.  To add one: write ``labkit/protocols/<name>.py`` with
its view, and add it to :data:`PROTOCOLS` below.  Order matters (the first view that
recognises a payload describes it): TLS first (its records may hold any protocol),
then WebSocket (frames on an upgraded HTTP connection), DNS, and HTTP.
"""

from __future__ import annotations

from labkit.protocols.dns import DNSView
from labkit.protocols.http import HTTPView
from labkit.protocols.tls import TLSView
from labkit.protocols.websocket import WebSocketView

__all__ = ["PROTOCOLS"]

PROTOCOLS = (TLSView, WebSocketView, DNSView, HTTPView)
