"""labkit.servers.relay: the seeded lossy UDP relay and the stop-and-wait receiver."""

import socket
import struct

import pytest
from conftest import eventually, needs_capture

from labkit import AckReceiver, Capture, UDPRelay, UDPServer
from labkit.servers.relay import SEQ


def through(seed, count=20, **impair):
    """Send 0..count-1 through a relay to a plain socket; what arrived, and the relay log."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(0.3)
        with UDPRelay(receiver.getsockname(), seed=seed, **impair) as relay:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                for i in range(count):
                    sender.sendto(b"%d" % i, relay.address)
            arrived = []
            try:
                while True:
                    arrived.append(int(receiver.recv(100)))
            except TimeoutError:
                pass
        return arrived, list(relay.log), relay.stats


def test_a_clean_relay_forwards_both_ways():
    with UDPServer("upper") as server, UDPRelay(server) as relay:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            for word in (b"one", b"two"):
                sock.sendto(word, relay.address)
                assert sock.recvfrom(100) == (word.upper(), relay.address)
    assert relay.stats == {"forward": 4, "drop": 0, "duplicate": 0, "hold": 0}


def test_the_same_seed_gives_the_same_run_and_another_seed_another():
    impair = dict(drop=0.2, duplicate=0.15, reorder=0.2)
    first = through(5, **impair)
    assert through(5, **impair) == first
    assert through(6, **impair)[1] != first[1]
    arrived, log, stats = first
    # What arrived follows from the log: dropped never, duplicated twice, held later.
    dropped = {n for _, n, a in log if a == "drop"}
    doubled = {n for _, n, a in log if a == "duplicate"}
    assert sorted(set(arrived)) == sorted(set(range(20)) - dropped)
    assert all(arrived.count(n) == 2 for n in doubled)
    assert stats["drop"] and stats["duplicate"] and stats["hold"]  # seed 5 exercises all three
    assert arrived != sorted(arrived)


def test_drop_everything_is_a_black_hole():
    arrived, log, _ = through(0, count=5, drop=1.0)
    assert arrived == [] and [a for _, _, a in log] == ["drop"] * 5


def test_a_held_datagram_with_nothing_after_it_is_released():
    arrived, _, _ = through(0, count=1, reorder=1.0, hold=0.05)
    assert arrived == [0]


def test_relay_to_a_dead_port_keeps_running():
    # A UDP socket connected to itself takes nothing from the relay, so the kernel answers
    # the relay "port unreachable" as for a dead port, yet no other process can take the
    # port before it listens again (closing it and binding later raced the other workers).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as target:
        target.bind(("127.0.0.1", 0))
        target.connect(target.getsockname())       # deaf to everyone else
        target.settimeout(2)
        with UDPRelay(target.getsockname()) as relay, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(3):                     # ICMP errors come back to the relay
                sock.sendto(b"anyone?", relay.address)
            # The relay logs a datagram before it sends it and sends one at a time, so once
            # the third is logged the first two have met the dead port.
            assert eventually(lambda: len(relay.log) == 3), \
                f"the relay should take 3 datagrams, took {relay.log}"
            _, back, _ = relay.endpoints           # the relay's socket toward the target
            target.connect((back.host, back.port))  # someone listens again
            sock.sendto(b"\x00" * 3, relay.address)  # garbage is just bytes to a relay
            while (data := target.recv(100)) == b"anyone?":
                pass                               # the third may still arrive
            assert data == b"\x00" * 3, f"the relay should forward the garbage too, got {data!r}"


def test_the_log_is_bounded_and_the_stats_count_every_datagram(monkeypatch):
    from labkit.servers import relay as relay_module

    monkeypatch.setattr(relay_module, "LOG_LIMIT", 4)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(5)
        with UDPRelay(receiver.getsockname()) as relay:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                for i in range(10):
                    sender.sendto(b"%d" % i, relay.address)
            arrived = [receiver.recv(10) for _ in range(10)]   # (logged before it is sent)
    assert len(arrived) == 10 and relay.stats["forward"] == 10
    assert relay.log == [("up", n, "forward") for n in range(4)] and relay.log.dropped == 6


def test_an_ack_receiver_keeps_acknowledging_in_order_past_what_it_keeps(monkeypatch):
    from labkit.servers import relay as relay_module

    monkeypatch.setattr(relay_module, "LOG_LIMIT", 2)
    receiver = AckReceiver()
    acks = [receiver(SEQ.pack(n) + b"m%d" % n, None) for n in range(5)]
    assert acks == [SEQ.pack(n) for n in range(5)]
    assert receiver.delivered == [b"m0", b"m1"] and receiver.delivered.dropped == 3
    assert receiver(SEQ.pack(7) + b"future", None) is None   # still expects 5


def test_bad_targets():
    with pytest.raises(TypeError, match=r"\(host, port\) tuple"):
        UDPRelay("localhost:53")
    with pytest.raises(ValueError, match="loopback"):
        UDPRelay(("8.8.8.8", 53))
    with pytest.raises(ValueError, match="not running"):
        UDPRelay(UDPServer())
    with pytest.raises(RuntimeError, match="with"):
        _ = UDPRelay(("127.0.0.1", 9)).address


@needs_capture
def test_roles_name_both_hops(live):
    with UDPServer("echo", name="echo") as server, UDPRelay(server) as relay, \
            Capture(relay) as wire:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            sock.sendto(b"hi", relay.address)
            sock.recv(10)
    hops = [(s.src, s.dst) for s in wire.segments]
    assert sorted(hops) == sorted([("client", "relay"), ("relay", "echo"),
                                   ("echo", "relay"), ("relay", "client")])


def test_ack_receiver_delivers_once_in_order_and_ignores_garbage():
    receiver = AckReceiver()
    seq = lambda n: struct.pack("!I", n)  # noqa: E731
    assert receiver(seq(0) + b"a", None) == seq(0)
    assert receiver(seq(0) + b"a", None) == seq(0)     # duplicate: ACKed again
    assert receiver(seq(2) + b"c", None) is None       # from the future: ignored
    assert receiver(seq(1) + b"b", None) == seq(1)
    assert receiver(b"\x01", None) is None             # too short to be anything
    assert receiver.delivered == [b"a", b"b"]
    assert receiver.duplicates == 1 and receiver.garbage == 1


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_a_relay_in_front_of_an_ipv6_server_speaks_ipv6():
    with UDPServer("upper", host="::1") as server, UDPRelay(server) as relay:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.sendto(b"six", relay.address)
            assert sock.recv(100) == b"SIX"


def test_a_datagram_that_cannot_be_passed_on_is_logged_and_the_relay_goes_on(caplog):
    import errno

    with UDPServer("echo") as server:
        relay = UDPRelay(server)
        real, failed = relay._to_target, []

        def too_big_once(data):
            if not failed:
                failed.append(data)
                raise OSError(errno.EMSGSIZE, "Message too long")
            real(data)

        relay._to_target = too_big_once
        with relay, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.sendto(b"first", relay.address)     # lost: could not be sent on
            sock.sendto(b"second", relay.address)
            assert sock.recv(100) == b"second"
    assert relay.undeliverable == 1 and "could not pass a 5-byte datagram up" in caplog.text
