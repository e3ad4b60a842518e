"""labkit: the machinery behind the netlab notebooks.

Servers to talk to, captures of what crossed the wire, and pictures of it.  The
network code being taught stays plain standard library in the notebooks.

    >>> from labkit import TCPServer, Capture
    >>> with TCPServer("echo") as server, Capture(server, name="demo") as wire:
    ...     ...   # the student's socket code
    >>> wire.table()

Names are imported on first use (PEP 562), so ``import labkit`` — and the lab
kernel's launcher, ``python -m labkit.net.namespace`` — start without loading
Scapy or matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_EXPORTS: dict[str, list[str | tuple[str, str]]] = {
    "capture.capture": ["Capture", "capture_mode"],
    "tools.doctor": [("doctor", "report")],
    "capture.flows": ["Segment", "flag_names"],
    "capture.sockets": ["SocketState", "tcp_states"],
    "servers.base": ["ServerError"],
    "servers.tcp": ["TCPServer"],
    "servers.udp": ["UDPServer"],
    "servers.stream": ["Dribbler", "SlowConsumer", "ByteCounter", "FramedEcho"],
    "servers.relay": ["UDPRelay", "AckReceiver"],
    "servers.dns": ["DNSServer"],
    "servers.tls": ["LocalCA", "TLSServer", "HTTPSServer"],
    "views.tls": ["tls_records", "client_hello", "server_hello", "handshake",
                      "handshake_round_trips"],
    "protocols.tlsdissect": ["TLSRecord"],
    "views.table": ["Table"],
    "views.ladder": ["ladder"],
    "views.connections": ["Connections"],
    "servers.http": ["HTTPServer"],
    "servers.wsgi": ["WSGIServer", "serve_in_thread"],
    "views.waterfall": ["Timing", "waterfall"],
    "servers.load": ["BackgroundServer", "LoadResult", "SlowReader", "load", "percentile"],
    "views.figures": ["rtt_figure", "throughput_figure", "plot_load"],
    "servers.websocket": ["WebSocketServer"],
    "protocols.websocket": ["WebSocketFrame", "parse_frames", "websocket_frames"],
    "net.namespace": ["textbook_port"],
    "capture.tcpinfo": ["CwndSampler", "TcpInfo", "tcp_info"],
    "views.timeseq": ["time_sequence", "seq_trace", "dropped_segments"],
    "views.congestion": ["cwnd_figure", "backoffs", "per_round_trip", "mathis_figure",
                         "bufferbloat_figure", "transfer_time_figure", "ramp_figure"],
    "views.models": ["mathis_throughput", "transfer_time"],
    "net.hosts": ["LabNetwork"],
    "net.topology": ["Cable", "Topology"],
    "views.topology": ["topology_figure"],
    "protocols.icmp": ["icmp_message", "ICMPMessage"],
    "protocols.ipfrag": ["Reassembly"],
    "net.link": ["Lateness"],
    "net.impairment": ["Impairment", "GilbertElliott"],
    "servers.vanish": ["forget"],
    "servers.tornado_app": ["TornadoServer"],
    "views.silence": ["silence_figure"],
    "servers.resolver": ["DNSResolver"],
    "views.race": ["race_figure", "connection_attempts"],
}
_WHERE = {(name if isinstance(name, str) else name[0]): (module, name if isinstance(name, str)
                                                         else name[1])
          for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'labkit' has no attribute {name!r}")
    module, attr = _WHERE[name]
    value = getattr(importlib.import_module(f".{module}", __name__), attr)
    globals()[name] = value  # next time, a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
