"""labkit: the machinery behind the netlab notebooks.

Servers to talk to, captures of what crossed the wire, and pictures of it.  The
network code being taught stays plain standard library in the notebooks.

    >>> from labkit import TCPServer, Capture
    >>> with TCPServer("echo") as server, Capture(server, name="demo") as wire:
    ...     ...   # the student's socket code
    >>> wire.table()
"""

from ._capture import Capture, capture_mode
from ._doctor import report as doctor
from ._flows import Segment, flag_names
from ._kernel import SocketState, tcp_states
from ._load import BackgroundServer, LoadResult, SlowReader, load, percentile, plot_load
from ._http import HTTPServer
from ._servers import ServerError, TCPServer, UDPServer
from ._stream import (ByteCounter, Dribbler, FramedEcho, SlowConsumer, rtt_figure,
                      throughput_figure)
from ._relay import AckReceiver, UDPRelay
from ._dns import DNSServer
from ._tls import HTTPSServer, LocalCA, TLSServer
from ._tlsview import (TLSRecord, client_hello, handshake, handshake_round_trips,
                       server_hello, tls_records)
from ._websocket import Frame, WebSocketServer, parse_frames, websocket_frames
from ._views import Table, ladder
from ._wsgi import WSGIServer, serve_in_thread
from ._waterfall import Timing, waterfall

__all__ = [
    "Capture", "capture_mode", "doctor",
    "Segment", "flag_names",
    "SocketState", "tcp_states",
    "ServerError", "TCPServer", "UDPServer",
    "Dribbler", "SlowConsumer", "ByteCounter", "FramedEcho", "rtt_figure", "throughput_figure",
    "UDPRelay", "AckReceiver", "DNSServer",
    "LocalCA", "TLSServer", "HTTPSServer",
    "TLSRecord", "tls_records", "client_hello", "server_hello", "handshake",
    "handshake_round_trips",
    "Table", "ladder",
    "HTTPServer", "WSGIServer", "serve_in_thread",
    "Timing", "waterfall",
    "BackgroundServer", "LoadResult", "SlowReader", "load", "percentile", "plot_load",
    "WebSocketServer", "Frame", "parse_frames", "websocket_frames",
]
