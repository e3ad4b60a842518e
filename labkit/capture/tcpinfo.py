"""What the kernel knows about a TCP connection: ``TCP_INFO``, read once or sampled over time.

A capture shows what crossed the wire; the congestion window (how many segments the
sender allows itself in flight) never crosses it.  Linux hands it out, with the smoothed
RTT and the retransmission counters, through ``getsockopt(IPPROTO_TCP, TCP_INFO)``: a
``struct tcp_info`` (``linux/tcp.h``), decoded here with ctypes.

    >>> info = tcp_info(sock)                  # one look: TcpInfo(cwnd=10, rtt=0.04, ...)
    >>> with CwndSampler(sock) as sampler:     # a thread reads it every 2 ms meanwhile
    ...     sock.sendall(data)
    >>> sampler.samples[-1].cwnd

Linux only (other systems have no ``TCP_INFO`` of this shape): elsewhere the first call
raises ``OSError`` saying so.
"""

from __future__ import annotations

import ctypes
import socket
import threading
import time
from dataclasses import dataclass
from itertools import pairwise

from labkit.servers import arguments

__all__ = ["TcpInfo", "tcp_info", "CwndSampler", "CA_STATES"]

TCP_INFO = getattr(socket, "TCP_INFO", 11)
# tcpi_ca_state: what the congestion control is doing (include/net/tcp.h, enum tcp_ca_state)
CA_STATES = {0: "open", 1: "disorder", 2: "cwr", 3: "recovery", 4: "loss"}
MAX_SAMPLES = 100_000   # a sampler keeps at most this many (200 s at 2 ms): memory is bounded


class _TcpInfo(ctypes.Structure):
    """``struct tcp_info`` from linux/tcp.h, up to ``tcpi_snd_wnd`` (Linux 5.19+).

    An older kernel fills fewer bytes: the fields it does not know stay 0.
    """

    _fields_ = [
        ("state", ctypes.c_uint8), ("ca_state", ctypes.c_uint8),
        ("retransmits", ctypes.c_uint8), ("probes", ctypes.c_uint8),
        ("backoff", ctypes.c_uint8), ("options", ctypes.c_uint8),
        ("snd_wscale", ctypes.c_uint8, 4), ("rcv_wscale", ctypes.c_uint8, 4),
        ("app_limited_and_fastopen", ctypes.c_uint8),
        *[(name, ctypes.c_uint32) for name in (
            "rto", "ato", "snd_mss", "rcv_mss",
            "unacked", "sacked", "lost", "retrans", "fackets",
            "last_data_sent", "last_ack_sent", "last_data_recv", "last_ack_recv",
            "pmtu", "rcv_ssthresh", "rtt", "rttvar", "snd_ssthresh", "snd_cwnd",
            "advmss", "reordering", "rcv_rtt", "rcv_space", "total_retrans")],
        *[(name, ctypes.c_uint64) for name in (
            "pacing_rate", "max_pacing_rate", "bytes_acked", "bytes_received")],
        *[(name, ctypes.c_uint32) for name in (
            "segs_out", "segs_in", "notsent_bytes", "min_rtt", "data_segs_in",
            "data_segs_out")],
        *[(name, ctypes.c_uint64) for name in (
            "delivery_rate", "busy_time", "rwnd_limited", "sndbuf_limited")],
        ("delivered", ctypes.c_uint32), ("delivered_ce", ctypes.c_uint32),
        ("bytes_sent", ctypes.c_uint64), ("bytes_retrans", ctypes.c_uint64),
        *[(name, ctypes.c_uint32) for name in (
            "dsack_dups", "reord_seen", "rcv_ooopack", "snd_wnd")],
    ]


@dataclass(frozen=True)
class TcpInfo:
    """One look at a connection, in SI units (seconds, bytes, segments).

    ``t`` is when it was read (``time.monotonic()``, or seconds since a sampler started).

    Attributes:
        t: when it was read: ``time.monotonic()``, or seconds since a sampler started
        ca_state: the congestion state: ``"open"``, ``"disorder"``, ``"cwr"``,
            ``"recovery"`` or ``"loss"``
        cwnd: the congestion window, in segments of ``mss`` bytes
        ssthresh: the slow start threshold, in segments (huge until the first loss)
        mss: bytes of payload per segment the sender uses
        rtt: the smoothed round-trip time, in seconds
        rttvar: how much the round-trip time varies, in seconds
        rto: the retransmission timeout now, in seconds
        retransmits: retransmissions of the oldest unacknowledged segment (RTO backoff)
        total_retrans: segments retransmitted over the connection's life
        lost: segments the sender believes lost right now
        unacked: segments in flight (sent, not yet acknowledged)
        bytes_acked: payload bytes the peer acknowledged
        delivery_rate: the kernel's estimate of the delivery rate, in bytes per second
    """

    t: float
    ca_state: str
    cwnd: int
    ssthresh: int
    mss: int
    rtt: float
    rttvar: float
    rto: float
    retransmits: int
    total_retrans: int
    lost: int
    unacked: int
    bytes_acked: int
    delivery_rate: float

    @property
    def in_slow_start(self) -> bool:
        """Is the window below the threshold, so growing by one segment per ACK?"""
        return self.cwnd < self.ssthresh


def _decode(raw: bytes, t: float) -> TcpInfo:
    info = _TcpInfo.from_buffer_copy(raw.ljust(ctypes.sizeof(_TcpInfo), b"\0"))
    return TcpInfo(
        t=t, ca_state=CA_STATES.get(info.ca_state, str(info.ca_state)), cwnd=info.snd_cwnd,
        ssthresh=info.snd_ssthresh, mss=info.snd_mss, rtt=info.rtt / 1e6,
        rttvar=info.rttvar / 1e6, rto=info.rto / 1e6, retransmits=info.retransmits,
        total_retrans=info.total_retrans, lost=info.lost, unacked=info.unacked,
        bytes_acked=info.bytes_acked, delivery_rate=float(info.delivery_rate))


def tcp_info(sock: socket.socket, *, t: float | None = None) -> TcpInfo:
    """The kernel's ``TCP_INFO`` for a connected TCP socket, decoded."""
    if not isinstance(sock, socket.socket) or sock.type != socket.SOCK_STREAM:
        raise TypeError(f"tcp_info needs a connected TCP socket, not {sock!r}")
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, ctypes.sizeof(_TcpInfo))
    except OSError as exc:
        raise OSError(exc.errno, f"TCP_INFO could not be read ({exc.strerror}): it needs "
                                 "Linux and an open TCP socket") from exc
    return _decode(raw, time.monotonic() if t is None else t)


class CwndSampler:
    """Read ``TCP_INFO`` every ``interval`` seconds in a thread while the block runs.

    ``samples`` are :class:`TcpInfo` with ``t`` in seconds since the block began; the
    sampler also takes one look on entry and one on exit, so even a short block has two.
    A sampler stops on its own after ``limit`` seconds (a forgotten one never runs on).

        >>> with CwndSampler(sock, interval=0.002) as sampler:
        ...     sock.sendall(data)
        >>> max(s.cwnd for s in sampler.samples)

    Attributes:
        sock: the connected TCP socket it reads ``TCP_INFO`` of
        interval: seconds between two looks
        limit: seconds after which it stops on its own
        samples: the looks so far, each a :class:`TcpInfo`, ``t`` from the block's start
    """

    def __init__(self, sock: socket.socket, *, interval: float = 0.002, limit: float = 60.0
                 ) -> None:
        self.sock = arguments.instance(sock, "sock", socket.socket, "a connected TCP socket")
        self.interval = arguments.number(interval, "interval", 0.0005, 1, "0.002 seconds")
        self.limit = arguments.number(limit, "limit", 0, 3600, "60 seconds", above_low=True)
        self.samples: list[TcpInfo] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def _look(self) -> None:
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(tcp_info(self.sock, t=time.monotonic() - self._t0))

    def _run(self) -> None:
        # Event.wait is the timer: stop() wakes it at once
        while not self._stop.wait(self.interval):
            if time.monotonic() - self._t0 > self.limit:
                return
            try:
                self._look()
            except OSError:
                return  # the socket was closed under us: the block is over

    def too_busy(self, tolerance: float = 0.010) -> str | None:
        """None if every look came within ``tolerance`` s of when it was due; else one
        sentence for a lesson: the samples missed what happened between them.

            >>> if (busy := sampler.too_busy()):
            ...     print(busy)
        """
        if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) \
                or tolerance < 0:
            raise ValueError(f"tolerance must be seconds ≥ 0, not {tolerance!r}")
        looks = [sample.t for sample in self.samples]
        late = max((b - a - self.interval for a, b in pairwise(looks)), default=0.0)
        if late <= tolerance:
            return None
        return (f"this machine was too busy for this measurement: TCP_INFO, due every "
                f"{self.interval * 1000:g} ms, was read up to {late * 1000:.0f} ms late, so the "
                f"samples below are the machine's, not the connection's — run it again when it "
                f"is quieter")

    def __enter__(self) -> CwndSampler:
        if self._thread is not None:
            raise RuntimeError("a CwndSampler samples one `with` block; make a new one")
        self._t0 = time.monotonic()
        self._look()   # fails here, in the caller's thread, if TCP_INFO cannot be read
        self._thread = threading.Thread(target=self._run, name="cwnd-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        try:
            self._look()
        except OSError:
            pass  # closed inside the block: the samples so far are the story
