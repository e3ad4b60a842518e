"""Replay mode never passes a recording off as the student's run, and checks never grade one.

Each test records a private conversation (record mode: live capture, needs CAP_NET_RAW),
then replays it with the same or different client code, as a student without
privilege would (LABKIT_CAPTURE=replay: servers and sockets still run live).
"""

import json
import socket

import pytest
from conftest import echo_exchange, needs_capture
from matplotlib.text import Text

from labkit import (
    Capture,
    DNSServer,
    Dribbler,
    HTTPServer,
    LocalCA,
    TCPServer,
    TLSServer,
    UDPServer,
    time_sequence,
)
from labkit.capture import capture as _capture
from labkit.capture.recording import difference as _difference
from labkit.capture.recording import summarize
from labkit.checks.lesson00 import check_first_capture
from labkit.checks.lesson01 import check_ack_predictions
from labkit.checks.lesson06 import check_server_name
from labkit.views.table import Table

pytestmark = needs_capture


def echo_cell(name, *messages, server=None):
    """Notebook 01's echo cell: send each message, read its echo."""
    with (server or TCPServer("echo")) as server, Capture(server, name=name) as wire:
        echo_exchange(server, messages)
    return wire


@pytest.fixture
def record(data_dir, monkeypatch):
    """Run a cell in record mode, then switch to replay mode for the rest of the test."""
    def run(cell, *args, **kwargs):
        monkeypatch.setenv("LABKIT_CAPTURE", "record")
        try:
            return cell(*args, **kwargs)
        finally:
            monkeypatch.setenv("LABKIT_CAPTURE", "replay")
    return run


# -- the view --------------------------------------------------------------------------------
def test_a_different_message_is_named_next_to_the_picture(record, capsys):
    record(echo_cell, "t-echo", b"hello")
    capsys.readouterr()
    student = b"a completely different message from the student"
    wire = echo_cell("t-echo", student)
    banner, warning = capsys.readouterr().out.splitlines()
    assert banner.startswith("▶ replay: showing the recording")
    assert warning == (
        f"⚠ These packets are a recording, not your run: your run sent {len(student)} bytes "
        f"(this recording: 5 bytes); the server sent {len(student)} bytes back (this "
        "recording: 5 bytes back). To see your own, use the lab kernel (`python -m labkit "
        "doctor` says how).")
    assert wire.matches_recording is False and f"sent {len(student)} bytes" in wire.difference
    assert wire.live_summary["server"]["connections"] == [[len(student)] * 2]
    assert b"hello" in bytes(wire.packets[3])  # the views still show the recording: said so


def figure_text(fig) -> str:
    return "\n".join(t.get_text() for t in fig.findobj(Text))


def test_a_changed_message_is_flagged_in_every_view(record, capsys, monkeypatch):
    """Notebook 00: the student sends 47 bytes of their own; every view of the capture
    (table, ladder figure, connections, time-sequence figure, and code that reads
    ``wire.segments`` to print what the client sent) says the picture is the recording."""
    cell = [7]  # the notebook's cell counter
    monkeypatch.setattr(_capture, "_current_cell", lambda: cell[0])
    record(echo_cell, "t-00", b"hello, wire")
    capsys.readouterr()
    student = b"my own message, forty-seven bytes long, exactly"
    assert len(student) == 47
    wire = echo_cell("t-00", student)
    said = capsys.readouterr().out.splitlines()[-1]
    assert said.startswith("⚠ These packets are a recording, not your run: your run sent 47 "
                           "bytes (this recording: 11 bytes)") and "lab kernel" in said
    assert wire.notice == said
    table = wire.table(stop=3)
    assert str(table).startswith(said) and "⚠ These packets are a recording" in \
        table._repr_html_()
    assert str(wire.table(connection=1)).startswith(said)
    assert str(wire.connections()).startswith(said)
    assert "⚠ These packets are a recording" in wire.connections()._repr_html_()
    assert str(Table(wire.segments)).startswith(said)  # the list itself carries it
    drawn = figure_text(wire.ladder()).replace("\n", " ")
    assert "⚠ These packets are a recording, not your run: your run sent 47 bytes" in drawn
    assert "⚠ These packets are a recording" in figure_text(time_sequence(wire.segments))
    capsys.readouterr()
    cell[0] = 11  # notebook 00 cell 11: what the recording says the client sent, under a ⚠
    client_sent = [s.summary for s in wire.segments if s.src == "client" and s.length]
    assert capsys.readouterr().out == said + "\n" and client_sent == ["b'hello, wire'"]
    assert len(wire.packets) == 10 and capsys.readouterr().out == ""  # once per cell
    assert said in repr(wire)


def test_the_same_conversation_prints_nothing_more(record, capsys):
    record(echo_cell, "t-echo", b"hello")
    capsys.readouterr()
    wire = echo_cell("t-echo", b"hello")
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1 and out.startswith("▶ replay: showing the recording")
    assert wire.matches_recording is True and wire.difference is None
    assert wire.notice is None and wire.segments.notice is None
    assert "⚠" not in str(wire.table()) + str(wire.connections()) + figure_text(wire.ladder())
    assert capsys.readouterr().out == ""


def dribble_cell(name, piece=4, pause=0.05):
    """Notebook 02's first cell: a server dribbles its message in pieces."""
    dribbler = Dribbler(b"HELLO, STREAM WORLD!", piece=piece, pause=pause)
    with TCPServer(handler=dribbler) as server, Capture(server, name=name) as wire:
        with socket.create_connection(server.address, timeout=5) as sock:
            while sock.recv(1024):
                pass
    return wire


def test_a_changed_segmentation_is_flagged(record, capsys):
    """Notebook 02 cell 3, piece=4 then piece=10: the same 20 bytes in 2 segments, not 5."""
    record(dribble_cell, "t-02")
    assert dribble_cell("t-02").matches_recording is True
    capsys.readouterr()
    wire = dribble_cell("t-02", piece=10)
    assert wire.matches_recording is False
    assert wire.difference == ("the server sent its 20 bytes in 2 segments (this recording: "
                               "5 segments of 4 bytes)")
    out = capsys.readouterr().out
    assert f"recording, not your run: {wire.difference}." in out
    assert "⚠" in figure_text(wire.ladder()) and str(wire.table()).startswith("⚠")


def test_a_student_who_sends_in_other_pieces_is_told(record, capsys):
    """The client's side: the same bytes in one send() or in three."""
    def pieces(*parts):
        with TCPServer("echo") as server, Capture(server, name="t-split") as wire:
            with socket.create_connection(server.address, timeout=3) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for part in parts:
                    sock.sendall(part)
                    got = b""
                    while len(got) < len(part):
                        got += sock.recv(100)
        return wire

    record(pieces, b"hello, wire")
    wire = pieces(b"hello", b", ", b"wire")
    assert wire.difference == ("your run sent its 11 bytes in 3 segments (this recording: "
                               "1 segment of 11 bytes)")


def test_a_connection_that_lasts_much_longer_is_flagged(record, capsys):
    """Timing: the same segments, but 0.3 s between them instead of 0.05 s."""
    record(dribble_cell, "t-slow", 4, 0.05)
    capsys.readouterr()
    wire = dribble_cell("t-slow", 4, 0.3)
    assert wire.matches_recording is False
    assert wire.difference.startswith("a connection of your run lasted 1.2")
    assert "(this recording: 0.2" in wire.difference


def test_outside_a_notebook_the_notice_is_printed_once_per_capture(record, capsys,
                                                                    monkeypatch):
    record(echo_cell, "t-echo", b"hello")
    wire = echo_cell("t-echo", b"bye")
    capsys.readouterr()
    wire.segments, wire.packets  # noqa: B018 - reading them is the point
    assert capsys.readouterr().out == ""  # said at the end of the block, in this "cell"
    monkeypatch.setattr(_capture, "_current_cell", lambda: 42)  # a notebook's next cell
    wire.segments, wire.segments  # noqa: B018
    assert capsys.readouterr().out.count("⚠ These packets are a recording") == 1


def test_same_sizes_other_bytes_differ_too(record, capsys):
    record(echo_cell, "t-echo", b"hello")
    wire = echo_cell("t-echo", b"jello")
    assert wire.matches_recording is False
    assert "other bytes than this recording (of the same sizes)" in capsys.readouterr().out


def test_more_connections_and_datagrams_are_named(record, capsys):
    def two_connections():
        with TCPServer("echo") as server, Capture(server, name="t-two") as wire:
            for _ in range(2):
                with socket.create_connection(server.address, timeout=3) as sock:
                    sock.sendall(b"hi")
                    sock.recv(10)
        return wire

    record(echo_cell, "t-two", b"hi")
    capsys.readouterr()
    assert two_connections().matches_recording is False
    out = capsys.readouterr().out
    assert "your run opened 2 TCP connection(s) (this recording: 1 TCP connection(s))" in out

    def datagrams(words):
        with UDPServer("upper") as server, Capture(server, name="t-udp") as wire:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(3)
                for word in words:
                    sock.sendto(word, server.address)
                    sock.recvfrom(100)
        return wire

    record(datagrams, [b"one", b"two", b"three"])
    assert datagrams([b"one", b"two", b"three"]).matches_recording is True
    capsys.readouterr()
    assert datagrams([b"one", b"two"]).matches_recording is False
    out = capsys.readouterr().out
    assert "your run sent 2 datagram(s) of 6 bytes (this recording: 3 datagram(s) of 11 " in out
    assert "the server sent 2 datagram(s) of 6 bytes (this recording: 3 datagram(s) of " in out


def test_a_recording_without_a_saved_summary_is_summarized_from_its_packets(record, data_dir):
    record(echo_cell, "t-old", b"hello")
    meta = data_dir / "t-old.json"
    saved = json.loads(meta.read_text())
    meta.write_text(json.dumps({"roles": saved["roles"]}))  # as recorded before summaries
    assert echo_cell("t-old", b"hello").matches_recording is True
    assert echo_cell("t-old", b"hellooo").matches_recording is False


def test_targets_that_cannot_count_make_no_claim(record, capsys):
    """A port number: labkit does not know what the socket behind it saw."""
    def by_port(message):
        with TCPServer("echo") as server, Capture(server.port, name="t-port") as wire:
            with socket.create_connection(server.address, timeout=3) as sock:
                sock.sendall(message)
                sock.recv(100)
        return wire

    record(by_port, b"hello")
    capsys.readouterr()
    wire = by_port(b"something else")
    assert wire.matches_recording is None and wire.live_summary is None
    assert len(capsys.readouterr().out.splitlines()) == 1  # the banner only


def test_an_unnamed_capture_says_there_is_nothing_to_show_and_how_to_see_packets(
        data_dir, monkeypatch, capsys):
    monkeypatch.setenv("LABKIT_CAPTURE", "replay")
    with TCPServer("echo") as server, Capture(server) as wire:
        with socket.create_connection(server.address, timeout=3) as sock:
            sock.sendall(b"hi")
            sock.recv(10)
    out = capsys.readouterr().out
    assert "None" not in out and "has no name" in out and "nothing to show" in out
    assert "lab kernel" in out and 'name="' in out and "python -m labkit record" in out
    assert len(wire.packets) == 0 and wire.matches_recording is None


# -- the servers count what the packets show ------------------------------------------------------
def count_then_reply(conn, addr):
    total = 0
    while data := conn.recv(4096):
        total += len(data)
    conn.sendall(b"received %d bytes" % total)


def greet_and_close(conn, addr):
    conn.sendall(b"hello, I close first\n" * 3)


@pytest.mark.parametrize("handler, talk", [
    ("echo", lambda s: (s.sendall(b"x" * 100_000), s.shutdown(socket.SHUT_WR),
                        [None for _ in iter(lambda: s.recv(65536), b"")])),
    (count_then_reply, lambda s: (s.sendall(b"x" * 3000), s.shutdown(socket.SHUT_WR),
                                  s.recv(100))),
    (greet_and_close, lambda s: [None for _ in iter(lambda: s.recv(100), b"")]),
    ("upper", lambda s: s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,  # a reset, no FIN
                                     b"\1\0\0\0\0\0\0\0") or s.sendall(b"abc") or s.recv(3)),
], ids=["echo-100k", "half-close", "server-closes-first", "client-resets"])
def test_a_tcp_server_counts_exactly_what_the_packets_show(live, handler, talk):
    with TCPServer(handler) as server, Capture(server) as wire:
        mark = server.conversation_mark()
        with socket.create_connection(server.address, timeout=3) as sock:
            talk(sock)
    seen, recorded = server.conversation(mark), summarize(wire.packets, wire.roles)["server"]
    assert seen["connections"] == recorded["connections"]
    for counts, sizes in zip(seen["segments"], recorded["segments"], strict=True):
        assert counts == [len(s) for s in sizes], (counts, sizes)


def test_tls_and_http_servers_count_what_the_packets_show(live):
    with LocalCA() as ca, TLSServer(ca) as server, Capture(server) as wire:
        ctx = ca.client_context()
        for _ in range(2):  # closes with the session tickets unread: a reset
            with socket.create_connection(server.address) as raw, \
                    ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"ping")
                tls.recv(10)
    seen, recorded = server.conversation(), summarize(wire.packets, wire.roles)["server"]
    pairs = zip(seen["connections"], recorded["connections"], strict=True)
    for (low_high, out), (got, _out) in pairs:
        # the client's FIN came, then its reset: the kernel does not say whether it counted
        # the FIN, so the server gives a range
        assert low_high in (got, [got, got + 1]) and out is None  # (certificates vary in size)
    assert seen["content_in"] == recorded["content_in"]  # the name asked for: localhost
    assert _difference([seen], [recorded]) is None

    with HTTPServer() as server, Capture(server) as wire:
        for target in ("/hello", "/bytes?n=40000"):
            with socket.create_connection(server.address, timeout=3) as sock:
                sock.sendall(f"GET {target} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n"
                             .encode())
                while sock.recv(65536):
                    pass
    seen, recorded = server.conversation(), summarize(wire.packets, wire.roles)["server"]
    for key in ("connections", "datagrams_in", "datagrams_out"):
        assert seen[key] == recorded[key]
    assert seen["content_in"] is None  # the HTTP server reads through its own parser: sizes
    assert_same_segments(seen, recorded)
    assert _difference([seen], [recorded]) is None


def assert_same_segments(seen: dict, recorded: dict) -> None:
    """The kernel's segment counts (server side) are the packets' segments, each way;
    both sides time each connection alike (well within ``SECONDS_APART``)."""
    for counts, sizes in zip(seen["segments"], recorded["segments"], strict=True):
        assert counts == [len(s) for s in sizes], (counts, sizes)
    for mine, theirs in zip(seen["seconds"], recorded["seconds"], strict=True):
        assert abs(mine - theirs) < 0.2, (seen["seconds"], recorded["seconds"])


def test_a_dns_server_counts_what_the_packets_show(live):
    from dnslib import DNSRecord

    with DNSServer({"www.netlab.test": "127.0.0.7"}) as dns, Capture(dns) as wire:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(3)
            for name in ("www.netlab.test", "nowhere.netlab.test"):
                sock.sendto(DNSRecord.question(name).pack(), dns.address)
                sock.recv(512)
    assert dns.conversation() == summarize(wire.packets, wire.roles)["dns"]


# -- checks never grade a recording -----------------------------------------------------------
def test_lesson00_first_capture_judges_the_students_bytes_in_replay(record):
    record(echo_cell, "t-00", b"ping")
    assert check_first_capture(echo_cell("t-00", b"ping")).passed
    verdict = check_first_capture(echo_cell("t-00", b"pong"))
    assert not verdict.passed and "lab kernel" in verdict.hint
    assert "other bytes" in verdict.message and str(verdict).startswith("❌")
    assert not check_first_capture(echo_cell("t-00", b"ping, pong")).passed


def test_lesson00_first_capture_cannot_judge_a_port_number_in_replay(record):
    def by_port():
        with TCPServer("echo") as server, Capture(server.port, name="t-00p") as wire:
            with socket.create_connection(server.address, timeout=3) as sock:
                sock.sendall(b"ping")
                sock.recv(10)
        return wire

    record(by_port)
    verdict = check_first_capture(by_port())
    assert not verdict.passed and "cannot tell" in verdict.message


def test_lesson01_ack_predictions_are_not_graded_on_someone_elses_packets(record):
    messages = (b"ping", b"0123456789", b"!")
    record(echo_cell, "t-01", *messages)
    assert check_ack_predictions([5, 15, 16], echo_cell("t-01", *messages)).passed
    other = echo_cell("t-01", b"pi", b"0123456789", b"!!!")  # same total: other ACKs
    assert other.matches_recording is False
    assert not check_ack_predictions([5, 15, 16], other).passed


def test_lesson06_server_name_grades_the_function_not_the_recording(record, data_dir):
    """The check feeds the student's parser ClientHellos of its own: a name read off the
    recording (the one a replayed capture shows) is no answer, whatever the run did."""
    from scapy.layers.tls.record import TLS

    def server_name(hello):
        extension = next(e for e in TLS(hello).msg[0].ext if hasattr(e, "servernames"))
        return extension.servernames[0].servername.decode()

    def mystery(name):
        with LocalCA() as ca, TLSServer(context=ca.server_context(name)) as server, \
                Capture(server, name="t-06") as wire:
            ctx = ca.client_context()
            with socket.create_connection(server.address) as raw:
                with ctx.wrap_socket(raw, server_hostname=name):
                    pass
        return wire

    record(mystery, "intranet.netlab.test")
    replayed = mystery("intranet.netlab.test")
    assert replayed.mode == "replay"
    assert check_server_name(server_name, replayed).passed
    assert not check_server_name(lambda hello: "intranet.netlab.test", replayed).passed
    other = mystery("www.netlab.test")
    assert other.matches_recording is False
    assert check_server_name(server_name, other).passed


def test_checks_still_grade_live_captures(live):
    assert check_first_capture(echo_cell(None, b"ping")).passed
    assert not check_first_capture(echo_cell(None, b"pong")).passed
    assert check_ack_predictions([3, 4], echo_cell(None, b"pi", b"!")).passed



# -- segments and timing: what the packets say, and what makes no claim ---------------------
def test_a_recording_says_how_its_bytes_were_split_and_how_long_it_took():
    import packets as made

    (entry,) = summarize(made.conversation(), {8080: "server"}).values()
    assert entry["segments"] == [[[5], [5]]] and entry["seconds"] == [0.006]  # SYN to FIN
    (resent,) = summarize(made.retransmission(), {8080: "server"}).values()
    assert resent["segments"] == [[None, None]] and resent["seconds"] == [None]  # after a
    # loss, how the bytes were split and how long it took depend on what was lost


def test_a_split_or_a_length_that_cannot_be_known_is_no_difference():
    recorded = {"connections": [[20, 20]], "datagrams_in": [], "datagrams_out": [],
                "content_in": None, "segments": [[[4] * 5, [20]]], "seconds": [0.4]}
    same = dict(recorded, segments=[[5, 1]], seconds=[0.41])
    assert _difference([same], [recorded]) is None
    unknown = dict(recorded, segments=[[None, None]], seconds=[None])  # a loss, or TLS
    assert _difference([unknown], [recorded]) is None
    assert _difference([dict(recorded, segments=[[2, 1]])], [recorded]) == (
        "your run sent its 20 bytes in 2 segments (this recording: 5 segments of 4 bytes)")
    assert _difference([dict(same, seconds=[0.8])], [recorded]) is None  # 2x, 0.4 s apart
    assert _difference([dict(same, seconds=[1.0])], [recorded]) == (
        "a connection of your run lasted 1.00 s (this recording: 0.40 s)")
    older = {key: value for key, value in recorded.items() if key not in ("segments",
                                                                          "seconds")}
    assert _difference([same], [older]) is None  # a summary saved before segments were


def test_writes_the_kernel_merges_differently_are_no_difference():
    """Notebook 02's 256 writes of 64 bytes: a busy moment merged them into 27 segments in
    the recording, a quiet run sent 64 or 256 — the same code (a fresh CI run said otherwise)."""
    merged = [64] * 20 + [128] * 5 + [14208, 256]  # 16384 bytes
    recorded = {"connections": [[16384, 6]], "datagrams_in": [], "datagrams_out": [],
                "content_in": None, "segments": [[merged, [6]]], "seconds": [0.02]}
    for count in (1, 64, 256):
        live = dict(recorded, segments=[[count, 1]])
        assert _difference([live], [recorded]) is None, count
    smaller_writes = dict(recorded, segments=[[512, 1]])  # writes of 32: more than 256
    assert _difference([smaller_writes], [recorded]) == (
        "your run sent its 16384 bytes in 512 segments (this recording: "
        f"{len(merged)} segments of 64 to 14208 bytes)")
    equal = dict(recorded, segments=[[[1024] * 16, [6]]])  # 16 writes of 1024, none merged
    assert _difference([dict(equal, segments=[[9, 1]])], [equal]) is None  # merged live
    assert _difference([dict(equal, segments=[[17, 1]])], [equal]) is not None
