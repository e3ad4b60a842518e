"""labkit: the machinery behind the netlab notebooks.

Servers to talk to, captures of what crossed the wire, and pictures of it.  The
network code being taught stays plain standard library in the notebooks.

    >>> from labkit import TCPServer, Capture
    >>> with TCPServer("echo") as server, Capture(server, name="demo") as wire:
    ...     ...   # the student's socket code
    >>> wire.table()
"""

from ._capture import Capture, capture_mode
from ._flows import Segment, flag_names
from ._servers import ServerError, TCPServer, UDPServer
from ._views import Table, ladder

__all__ = [
    "Capture", "capture_mode",
    "Segment", "flag_names",
    "ServerError", "TCPServer", "UDPServer",
    "Table", "ladder",
]
