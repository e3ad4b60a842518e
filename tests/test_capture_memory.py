"""A capture's memory is bounded, and every view says exactly what it did not keep.

Past ``whole`` bytes a capture keeps each frame's headers only (the payload's size stays
known); past ``frames`` bytes it keeps nothing more and counts what it left out.  Its
ring starts small and grows when traffic needs it, without losing or doubling a packet.
The 1 Gbit/s x 5 s figures are in benchmarks/capture_memory.py.
"""

import socket
import subprocess

import pytest
from conftest import needs_capture, require_tool
from matplotlib.text import Text

from labkit import Capture, TCPServer
from labkit.capture import live as _live
from labkit.capture.budget import DEFAULT_MEMORY, MIN_MEMORY, MemoryBudget
from labkit.capture.endpoints import watch
from labkit.capture.flows import NOT_KEPT, segments
from labkit.capture.frames import Frame, Frames, headers_end
from labkit.capture.pcapng import read

MESSAGE = 200_000  # bytes over TCP: a few frames on lo (64 KiB each), each far past a header


def _sink(conn, addr):
    while conn.recv(1 << 20):
        pass


def _send(server, size: int) -> None:
    """Send ``size`` bytes to a ``_sink`` and wait until it read them all: sendall() only
    queues them, and on a busy machine the kernel may still be sending when a block ends."""
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(b"x" * size)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)  # the sink's EOF: it has read everything


def small_budget(whole: int, frames: int) -> MemoryBudget:
    """A budget with room for ``whole`` bytes of whole frames and ``frames`` in all."""
    budget = MemoryBudget(MIN_MEMORY)
    budget.whole, budget.frames = whole, frames
    return budget


def test_the_default_budget_and_its_limits():
    budget = MemoryBudget()
    assert budget.limit == DEFAULT_MEMORY == 256 * 10**6
    assert budget.ring_max + budget.frames == budget.limit and budget.whole < budget.frames
    with pytest.raises(TypeError, match=r"^memory must be an int from 8000000 to .* "
                                        r"\(e\.g\. 512 \* 10\*\*6 for 512 MB.*not '256MB'$"):
        Capture(8080, memory="256MB")
    with pytest.raises(ValueError, match=r"^memory must be an int from 8000000 .* not 1000$"):
        Capture(8080, memory=1000)
    assert budget.notice([Frame(b"x" * 60, 0, 60)], 0, 0) is None  # all kept: nothing said


@needs_capture
def test_past_its_budget_a_capture_keeps_headers_and_every_view_says_so(live, capsys,
                                                                          tmp_path):
    with TCPServer(_sink) as server:
        wire = Capture(server, memory=MIN_MEMORY)
        wire.budget.whole, wire.budget.frames = 1, wire.budget.frames  # headers from the start
        with wire:
            _send(server, MESSAGE)
    data = [s for s in wire.segments if s.length]  # (a busy machine may resend some)
    assert max(s.seq + s.length for s in data) == 1 + MESSAGE  # sizes known without bytes
    assert all(s.summary == NOT_KEPT or "retransmission" in s.summary for s in data)
    said = wire.notice
    assert said is not None and said.startswith(
        "⚠ this capture keeps at most 8 MB (memory=8,000,000): from packet 3 on it kept "
        f"headers only ({sum(s.length for s in data):,} bytes of payload left out)")  # 0-2:
    assert said.endswith("Capture(..., memory=...) keeps more")                   # handshake
    assert said in capsys.readouterr().out
    summary = str(wire.connections())
    assert summary.startswith(said) and f"{sum(s.length for s in data)}" in summary
    assert str(wire.table()).startswith(said) and "⚠ this capture keeps" in \
        wire.table()._repr_html_()
    drawn = " ".join(t.get_text() for t in wire.ladder().findobj(Text)).replace("\n", " ")
    assert "⚠ this capture keeps at most 8 MB" in drawn
    assert all(len(f.data) == headers_end(f.data) for f in wire._frames.frames)
    assert wire.complete  # every packet is there, headers at least

    path = wire.save(tmp_path / "cut.pcapng")  # pcapng's way: captured length < length
    assert [(len(bytes(p)), p.wirelen) for p in read(path)] == \
        [(len(f.data), f.wirelen) for f in wire._frames.frames]
    tshark = require_tool("tshark")  # (the last check: without tshark, the rest has run)
    lengths = subprocess.run([tshark, "-r", str(path), "-Y", "tcp.len > 0", "-T", "fields",
                              "-e", "tcp.len"], capture_output=True, text=True, check=True,
                             timeout=60).stdout.split()
    assert sum(map(int, lengths)) == sum(s.length for s in data)  # tshark reads them too


@needs_capture
def test_past_all_of_its_budget_a_capture_counts_what_it_left_out(live, receiver, capsys):
    sent, size = 300, 1000
    wire = Capture(receiver, memory=MIN_MEMORY)
    wire.budget.whole, wire.budget.frames = 100_000, 120_000
    with wire, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for i in range(sent):
            sock.sendto(b"%04d" % i + b"." * (size - 4), ("127.0.0.1", receiver))
    frames = wire._frames.frames
    whole = [f for f in frames if len(f.data) == f.wirelen]
    assert 0 < len(whole) < len(frames) < sent
    assert [int(f.data[42:46]) for f in whole] == list(range(len(whole)))  # the first ones
    left_out = sent - len(frames)
    assert f"from packet {len(whole):,} on it kept headers only" in wire.notice
    assert (f"the {left_out:,} packets after packet {len(frames) - 1:,} ({left_out * 1042:,} "
            "bytes) were not kept at all") in wire.notice
    assert not wire.complete and wire.lost == 0
    assert [s.length for s in wire.segments] == [size] * len(frames)
    assert sum(len(f.data) + 170 for f in frames) < 120_000 + 2 * (size + 170)


@needs_capture
def test_a_lesson_sized_capture_keeps_a_small_ring(live, receiver):
    _roles, endpoints = watch([receiver], "udp")
    sniffer = _live.LiveSniffer("lo", endpoints)
    sniffer.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for i in range(100):
            sock.sendto(b"datagram %d" % i, ("127.0.0.1", receiver))
    sniffer.settle(2.0)
    sniffer.stop()
    assert len(sniffer.frames) == 100
    assert sniffer.ring_size == _live.RING_START <= 8 * 1024 * 1024  # not 64 MiB


@needs_capture
def test_a_ring_that_grows_reads_every_packet_once_in_order(live, receiver, monkeypatch):
    """A ring of 2 blocks fills at once: the reader has a bigger one made, reads both
    while both are bound, and keeps each packet once - or counts it lost."""
    monkeypatch.setattr(_live, "RING_START", 2 * _live.BLOCK_SIZE)
    _roles, endpoints = watch([receiver], "udp")
    sniffer = _live.LiveSniffer("lo", endpoints)
    sniffer.start()
    sent = 60_000
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for i in range(sent):
            sock.sendto(b"%08d" % i, ("127.0.0.1", receiver))
    sniffer.settle(2.0)
    sniffer.stop()
    numbers = [int(f.data[42:50]) for f in sniffer.frames]
    assert sniffer.ring_size > 2 * _live.BLOCK_SIZE, "the ring never grew"
    assert len(set(numbers)) == len(numbers), "a packet was kept twice"
    # in order, but for two CPUs' queues racing (a few packets; never a ring's worth)
    highest, behind = -1, 0
    for number in numbers:
        highest = max(highest, number)
        behind = max(behind, highest - number)
    assert behind < 100, f"a packet came {behind} packets late: rings read out of order"
    assert len(numbers) + sniffer.lost == sent, "a packet went missing without being counted"


def test_a_frame_cut_to_its_headers_still_tells_its_payload_size():
    """The bytes path and Scapy's (a saved, cut capture read back) say the same."""
    import packets as made
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    full = bytes(made.tcp(("127.0.0.1", 40000), ("127.0.0.1", 8080), "PA", 1, 1, b"x" * 500))
    udp = bytes(Ether() / IP(src="127.0.0.1", dst="127.0.0.1") / UDP(sport=40000, dport=8080)
                / (b"y" * 300))
    frames = Frames([Frame(data[:headers_end(data)], 10**9 * (i + 1), len(data))
                     for i, data in enumerate([full, udp])])
    assert [len(f.data) for f in frames.frames] == [54, 42]
    by_bytes = segments(frames, {8080: "server"})
    assert [(s.length, s.summary) for s in by_bytes] == [(500, NOT_KEPT), (300, NOT_KEPT)]
    by_scapy = segments(list(frames), {8080: "server"})
    assert [(s.length, s.summary) for s in by_scapy] == [(500, NOT_KEPT), (300, NOT_KEPT)]
    assert frames.cut() == [0, 1]


@needs_capture
def test_a_capture_past_its_budget_is_not_made_a_recording(live, data_dir, monkeypatch, capsys):
    """Replay compares a student's run with a whole recording: a cut one would mislead."""
    monkeypatch.setenv("LABKIT_CAPTURE", "record")
    with TCPServer(_sink) as server:
        wire = Capture(server, name="t-big", memory=MIN_MEMORY)
        wire.budget.whole = 1
        with wire:
            _send(server, MESSAGE)
    assert not (data_dir / "t-big.pcapng").exists()
    assert "⚠ not recorded to t-big.pcapng: this capture did not keep every packet whole" in \
        capsys.readouterr().out
