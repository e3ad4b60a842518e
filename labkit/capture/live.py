"""Live sniffing on ``lo``: a raw socket, a sniffer thread, and knowing when it is done.

    >>> sniffer = LiveSniffer("lo", endpoints)     # endpoints: see labkit.capture.endpoints
    >>> sniffer.start(); ...; sniffer.settle(2.0); sniffer.stop()
    >>> sniffer.packets                            # arriving copies, in order

Needs CAP_NET_RAW (the lab kernel has it).  The exit waits on a condition, never a
sleep: a "fence" datagram sent to ourselves marks the end of the queue, and the
:class:`~labkit.capture.flows.TcpTracker` says when every byte sent was acknowledged.
"""

from __future__ import annotations

import fcntl
import socket
import sys
import termios
import threading
import time

from scapy.arch.linux import L2ListenSocket
from scapy.config import conf
from scapy.data import MTU
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror
from scapy.layers.inet6 import ICMPv6DestUnreach, IPerror6, IPv6
from scapy.packet import Packet
from scapy.sendrecv import AsyncSniffer

from labkit.capture.flows import TcpTracker
from labkit.protocols.scapy_compat import last_packet_timestamp

__all__ = ["LiveSniffer"]

READY_TIMEOUT = 5.0   # seconds for the sniffer to open its socket
STOP_TIMEOUT = 5.0    # seconds for the sniffer thread to end once told to
SOL_PACKET, PACKET_STATISTICS = 263, 6
SO_RCVBUFFORCE = 33  # Linux; not exported by Python's socket module
CAPTURE_BUFFER = 32 * 1024 * 1024  # bytes: a bulk transfer on lo must not overflow it

conf.verb = 0


class _DirectionalListenSocket(L2ListenSocket):
    """Like Scapy's listen socket, but remembers whether each packet was outgoing.

    On ``lo`` the kernel hands a raw socket every packet twice: once as it leaves
    (PACKET_OUTGOING) and once as it arrives.  We show only the arriving copy and
    count the leaving ones to know when nothing is still in flight.
    """

    last_outgoing = False
    busy = False   # a packet was taken from the queue and is not handled yet

    def recv_raw(self, x=MTU):
        self.busy = True   # (before the queue shrinks: see LiveSniffer._drained)
        pkt, sa_ll, ts = self._recv_raw(self.ins, x)  # private: see scapy_compat.PRIVATE
        if ts is None:
            ts = last_packet_timestamp(self.ins)
        self.last_outgoing = sa_ll[2] == socket.PACKET_OUTGOING
        return self.LL, pkt, ts


def _enlarge_receive_buffer(sock: socket.socket) -> None:
    """Ask for a big queue; SO_RCVBUFFORCE (root) may exceed the rmem_max limit."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, CAPTURE_BUFFER)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CAPTURE_BUFFER)


def _kernel_drops(sock: socket.socket) -> int:
    """Packets the kernel dropped because our queue was full (PACKET_STATISTICS)."""
    stats = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
    return int.from_bytes(stats[4:8], sys.byteorder)


class LiveSniffer:
    """The packets of some endpoints, read from ``iface`` by a Scapy sniffer thread."""

    def __init__(self, iface: str, endpoints: list):
        self.iface = iface
        self.endpoints = endpoints
        self.packets: list = []
        self.tracker = TcpTracker()
        self.complete = True       # False once something was missed
        self.sniffer: AsyncSniffer | None = None
        self._sent = self._arrived = 0
        self._changed = threading.Condition()
        self._sock: _DirectionalListenSocket | None = None
        self._fence: socket.socket | None = None
        self._fence_port = 0
        self._fence_seen = False
        # On lo every packet is seen twice (leaving, arriving) and the fence tells when all
        # have arrived.  On a lab link's interface (LabNetwork.interface) each packet is seen
        # once, either way: leaving copies are real packets there, and no fence crosses it.
        self._loopback = iface == "lo"

    @property
    def bpf(self) -> str:
        """The kernel's filter: our endpoints, ICMP errors quoting them, and the fence."""
        ours = " or ".join(e.bpf() for e in self.endpoints)
        return f"{ours} or (udp and dst host 127.0.0.1 and dst port {self._fence_port})"

    def start(self) -> None:
        """Open the socket and start the thread; on an error call :meth:`stop`."""
        # The fence: a datagram we send to ourselves on exit.  Once its arriving copy
        # is read, every packet sent before it has been read too (one FIFO queue).
        self._fence = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._fence.bind(("127.0.0.1", 0))
        self._fence_port = self._fence.getsockname()[1]
        # promiscuous mode is not needed to see a host's own packets, and Scapy's ioctl for
        # it looks the interface up in the namespace Scapy started in, not a lab host's
        self._sock = sock = _DirectionalListenSocket(iface=self.iface, filter=self.bpf,
                                                     promisc=self._loopback)
        _enlarge_receive_buffer(sock.ins)
        _kernel_drops(sock.ins)  # reading the statistics resets them: count from here on
        ready = threading.Event()
        self.sniffer = AsyncSniffer(opened_socket=sock, prn=self._on_packet, store=False,
                                    started_callback=ready.set)
        self.sniffer.start()
        if not ready.wait(READY_TIMEOUT):
            raise RuntimeError(
                f"the sniffer on {self.iface} did not start within {READY_TIMEOUT}s")

    def is_ours(self, pkt) -> bool:
        """Does this packet belong to our endpoints (or the fence)?  BPF can't parse an
        ICMP error's quote as Scapy does, and a raw socket sees every packet until Scapy
        attaches its filter: this check is the filter's twin, in Python."""
        quoted = ICMP in pkt or ICMPv6DestUnreach in pkt  # an error: judge the packet it quotes
        ips: tuple[type[Packet], ...]
        layers: tuple[type[Packet], ...]
        if quoted:
            ips, layers = (IPerror, IPerror6), (TCPerror, UDPerror)
        else:
            ips, layers = (IP, IPv6), (TCP, UDP)
        ip = next((pkt[layer] for layer in ips if layer in pkt), None)
        seg = next((pkt[layer] for layer in layers if layer in pkt), None)
        if ip is None or seg is None:
            return False
        protocol = "tcp" if isinstance(seg, TCP) else "udp"
        return self._is_fence(pkt) or any(e.matches(protocol, ip.src, seg.sport, ip.dst, seg.dport)
                                          for e in self.endpoints)

    def _is_fence(self, pkt) -> bool:
        return (UDP in pkt and IP in pkt and pkt[UDP].dport == self._fence_port
                and pkt[IP].dst == "127.0.0.1")

    def _on_packet(self, pkt) -> None:
        assert self._sock is not None  # opened in start(), before the sniffer that calls us
        try:
            self._handle(pkt, self._sock.last_outgoing)  # set by the recv that produced pkt
        finally:
            with self._changed:
                self._sock.busy = False
                self._changed.notify_all()

    def _handle(self, pkt, outgoing: bool) -> None:
        if not self.is_ours(pkt):
            return
        with self._changed:
            if self._is_fence(pkt):
                self._fence_seen = self._fence_seen or not outgoing
            elif outgoing and self._loopback:
                self._sent += 1
            else:
                self._arrived += 1
                self.packets.append(pkt)
                self.tracker.add(pkt)
            self._changed.notify_all()

    def _drained(self) -> bool:
        """Has the sniffer handled every packet the kernel queued for it?  A packet reaches
        this queue before the host's own sockets see it, so once the code being watched
        has its data, its packets are in here, if not read yet."""
        sock = self._sock
        if sock is None or sock.busy:
            return False
        queued = bytearray(4)
        fcntl.ioctl(sock.ins.fileno(), termios.FIONREAD, queued)   # 0: the queue is empty
        return not int.from_bytes(queued, sys.byteorder)

    def _quiet(self) -> bool:
        if not self._loopback:   # no fence crosses a lab link: the queue itself must be empty
            return self._drained() and self.tracker.settled()
        return self._fence_seen and self._arrived >= self._sent and self.tracker.settled()

    def settle(self, timeout: float) -> bool:
        """Wait (bounded) for every packet already sent to arrive, and for the final ACKs
        of anything that needs one (a condition, not a sleep).  False: gave up."""
        if self._fence is None:
            raise RuntimeError("settle() waits for packets of a started sniffer: start() first")
        if self._loopback:
            self._fence.sendto(b"labkit fence", ("127.0.0.1", self._fence_port))
        with self._changed:
            settled = self._changed.wait_for(self._quiet, timeout)
        self.complete = self.complete and settled
        return settled

    def stop(self) -> None:
        """Stop the sniffer thread (bounded wait) and close both sockets; safe to repeat."""
        sniffer, self.sniffer = self.sniffer, None
        thread = sniffer.thread if sniffer is not None else None
        deadline = time.monotonic() + STOP_TIMEOUT
        while (sniffer is not None and thread is not None and thread.is_alive()
               and time.monotonic() < deadline):
            try:  # repeated: a sniffer still starting up may miss the first stop
                sniffer.stop(join=False)  # wakes its select() through Scapy's pipe
            except Exception:  # noqa: BLE001 - not running yet, or already ended
                pass
            thread.join(0.05)
        if thread is not None and thread.is_alive():
            self.complete = False
            print(f"⚠ the sniffer did not stop within {STOP_TIMEOUT}s: this capture may be "
                  "incomplete")
        if self._sock is not None:
            if self._sock.closed:  # Scapy closes a socket whose reading raised
                self.complete = False
                print("⚠ the sniffer stopped early after an error: this capture is incomplete")
            elif dropped := _kernel_drops(self._sock.ins):
                self.complete = False
                print(f"⚠ the kernel dropped {dropped} packets before the capture could read "
                      "them: this capture is incomplete (the machine is busy; run the cell again)")
            self._sock.close()
            self._sock = None
        if self._fence is not None:
            self._fence.close()
            self._fence = None
