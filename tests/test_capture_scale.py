"""A capture is complete, or says exactly what it missed; frames are whole; pcapng is exact.

The numbers at scale (10,000 connections, 100,000 datagrams, 100 MB, against tcpdump)
are in benchmarks/capture_scale.py; these tests check the mechanisms, quickly.
"""

import socket
import struct
import subprocess
import threading

import pytest
from conftest import can_capture, needs_capture, require_tool
from matplotlib.text import Text

from labkit import Capture, TCPServer
from labkit.capture import live as _live
from labkit.capture.frames import tcp_facts
from labkit.capture.pcapng import read


@needs_capture
def test_a_queue_that_overflows_reports_exactly_what_is_missing(live, receiver, monkeypatch,
                                                                capsys):
    """The reader is held back while 3,000 datagrams arrive at a ring of a few hundred:
    the kernel drops most of them, and every view says how many, exactly."""
    sent = 3000
    gate = threading.Event()
    read = _live.LiveSniffer._read

    def held_back(self, *args):
        gate.wait(30)
        read(self, *args)

    monkeypatch.setattr(_live, "BLOCK_SIZE", 1 << 16)  # a ring of one 64 KiB block:
    monkeypatch.setattr(_live, "RING_START", 1)          # room for a few hundred datagrams
    monkeypatch.setattr(_live.LiveSniffer, "_read", held_back)
    with Capture(receiver) as wire:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(sent):
                s.sendto(b"datagram %d" % i, ("127.0.0.1", receiver))
        gate.set()
    assert 0 < len(wire) < sent
    assert wire.lost == sent - len(wire) and not wire.complete
    said = f"⚠ {wire.lost} packets were lost"
    assert said in capsys.readouterr().out
    table = wire.table()
    assert said in repr(wire) and str(table).startswith(said) and said in table._repr_html_()
    figure = wire.ladder(stop=3)
    assert any(said in t.get_text() for t in figure.findobj(Text))  # drawn in the figure


@needs_capture
def test_a_capture_that_keeps_up_loses_nothing(live, receiver):
    with Capture(receiver) as wire:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(2000):
                s.sendto(b"datagram %d" % i, ("127.0.0.1", receiver))
    assert (len(wire), wire.lost, wire.complete) == (2000, 0, True)
    assert "lost" not in repr(wire) and "lost" not in str(wire.table(stop=2))


def _sink(conn, addr):
    while conn.recv(1 << 20):
        pass


def _pcapng_blocks(data: bytes):
    """(type, body) of each block of a little-endian pcapng file."""
    at = 0
    while at < len(data):
        kind, size = struct.unpack_from("<II", data, at)
        yield kind, data[at + 8:at + size - 4]
        at += size


def _options(body: bytes) -> dict[int, bytes]:
    found, at = {}, 0
    while at + 4 <= len(body):
        code, size = struct.unpack_from("<HH", body, at)
        if code == 0:
            break
        found[code] = body[at + 4:at + 4 + size]
        at += 4 + size + (-size % 4)
    return found


@pytest.fixture(scope="module")
def megabyte(tmp_path_factory):
    """1 MB sent over TCP on lo, captured and saved: (capture, pcapng path)."""
    if not can_capture():
        pytest.skip("live capture needs CAP_NET_RAW")
    with pytest.MonkeyPatch.context() as patch:  # (CI also runs the suite in replay mode)
        patch.setenv("LABKIT_CAPTURE", "live")
        for _ in range(3):  # a capture that says it missed packets (a loaded machine): again
            with TCPServer(_sink) as server, Capture(server) as wire:
                with socket.create_connection(server.address, timeout=10) as s:
                    s.sendall(b"x" * (1 << 20))  # queued, not yet sent: on a busy machine
                    s.shutdown(socket.SHUT_WR)   # the kernel may still be sending it when
                    s.recv(1)                    # the block ends, so wait for the sink's EOF
            if wire.complete and not wire.lost:
                break
    assert wire.complete and not wire.lost, (
        f"three captures of 1 MB each said they missed packets (lost {wire.lost}): the "
        "tests below need a whole one")
    return wire, wire.save(tmp_path_factory.mktemp("megabyte") / "megabyte.pcapng")


@needs_capture
def test_full_size_loopback_segments_are_read_whole(megabyte):
    """lo's MTU is 65,536: a segment's frame reaches 65,549 bytes, and its length in the
    table is what its sequence number advances by."""
    wire, _path = megabyte
    data = [s for s in wire.segments if s.src == "client" and s.length]
    sent = 1  # relative seq just past the last new byte: each new segment starts there
    for seg in data:
        assert seg.seq <= sent, f"bytes {sent}-{seg.seq - 1} missing: a length was cut short"
        sent = max(sent, seg.seq + seg.length)  # (a segment starting earlier is resent data)
    assert sent == 1 + (1 << 20)
    frames = wire._frames.frames
    assert max(len(f.data) for f in frames) > 65535  # more than Scapy's old read size
    assert all(len(f.data) == f.wirelen for f in frames)
    biggest = max(frames, key=lambda f: len(f.data))
    assert tcp_facts(biggest.data)[4] == max(s.length for s in data)


@needs_capture
def test_saved_pcapng_has_one_interface_named_lo_whole_frames_and_kernel_stamps(megabyte):
    wire, path = megabyte
    blocks = list(_pcapng_blocks(path.read_bytes()))
    interfaces = [body for kind, body in blocks if kind == 1]
    assert len(interfaces) == 1
    linktype, _reserved, _snaplen = struct.unpack_from("<HHI", interfaces[0])
    options = _options(interfaces[0][8:])
    assert (linktype, options[2], options[9]) == (1, b"lo", bytes([9]))  # Ethernet, ns
    packets = [struct.unpack_from("<IIIII", body) for kind, body in blocks if kind == 6]
    assert [(p[0], p[3], p[4]) for p in packets] == [(0, f.wirelen, f.wirelen)
                                                     for f in wire._frames.frames]
    assert [p[1] << 32 | p[2] for p in packets] == [f.ns for f in wire._frames.frames]
    again = read(path)  # Scapy reads it back: replay mode loads recordings this way
    assert [bytes(p) for p in again] == [f.data for f in wire._frames.frames]
    assert [p.time for p in again] == [p.time for p in wire.packets]


@needs_capture
def test_tshark_reads_the_saved_frames_without_complaint(megabyte):
    tshark = require_tool("tshark")
    _wire, path = megabyte
    result = subprocess.run(
        [tshark, "-r", str(path), "-T", "fields", "-e", "frame.interface_name",
         "-e", "frame.len", "-e", "frame.cap_len", "-e", "_ws.expert.message"],
        capture_output=True, text=True, timeout=120, check=True)
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert rows and {r[0] for r in rows} == {"lo"}
    assert all(r[1] == r[2] for r in rows)
    complaints = [r[3] for r in rows if "alformed" in r[3] or "exceeds" in r[3]]
    assert not complaints, complaints[:3]
