import io
import itertools
import random

import pytest
from matplotlib.patches import FancyArrowPatch
from packets import C, S, conversation, tcp

from labkit import Connections, Table, ladder
from labkit.capture.flows import segments
from labkit.views.connections import connection_segments
from labkit.views.ladder import DPI, FONT, LABEL_MAX, MAX_LIFELINES, MAX_PACKETS, PAGE_ROWS


def arrows(fig):
    return [p for p in fig.axes[0].patches if isinstance(p, FancyArrowPatch)]


def test_table_has_one_row_per_packet_with_readable_columns():
    table = Table(segments(conversation(), {8080: "server"}))
    lines = str(table).splitlines()
    assert len(table) == 8 and len(lines) == 2 + 8
    assert lines[0].split() == ["#", "t", "(s)", "from", "→", "to", "flags", "seq", "ack",
                                "len", "summary"]
    assert lines[2].split() == ["0", "0.000000", "client", "→", "server", "SYN", "0", "0"]
    html = table._repr_html_()
    assert html.count("<tr") == 1 + 8 and "client → server" in html


def test_ladder_draws_one_labelled_arrow_per_packet():
    segs = segments(conversation(), {8080: "server"})
    fig = ladder(segs, title="echo")
    assert len(arrows(fig)) == 8
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "SYN seq=0" in texts and "FIN-ACK seq=6 ack=7" in texts
    assert {"client", "server"} <= set(texts)


def test_ladder_stays_legible_at_40_packets():
    pkts = [tcp(C, S, "S", 0)] + [tcp(C, S, "PA", 1 + i, 0, b"x", t=i / 1000) for i in range(39)]
    fig = ladder(segments(pkts, {8080: "server"}))
    assert len(arrows(fig)) == 40
    _width, height = fig.get_size_inches()
    assert height / 40 >= 0.45  # at least ~0.45 inch per arrow row: labels never overlap


def test_empty_views():
    assert str(Table([])) == "(no packets)"
    assert len(arrows(ladder([]))) == 0


# -- payloads are text, never markup ------------------------------------------------------
def _payload_segments(payloads):
    """A handshake, then each payload from client to server."""
    pkts, seq = [tcp(C, S, "S", 0, t=0.0), tcp(S, C, "SA", 0, 1, t=0.001)], 1
    for i, payload in enumerate(payloads):
        pkts.append(tcp(C, S, "PA", seq, 1, payload, t=0.002 + i / 1000))
        seq += len(payload)
    return segments(pkts, {8080: "server"})


def _render(fig):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")  # mathtext is parsed here: a bad formula raises here
    return buffer.getvalue()


def test_dollar_signs_are_dollar_signs():
    segs = _payload_segments([b"echo $HOME and $PATH", b"$\\alpha$", b"$x^2$ costs $5"])
    fig = ladder(segs, title="cost: $5 and $6")
    _render(fig)
    texts = fig.axes[0].texts
    assert any("$HOME and $PATH" in t.get_text() for t in texts)
    assert all(not t.get_parse_math() for t in texts)       # no italics, no ValueError
    assert not fig.axes[0].title.get_parse_math()


@pytest.mark.parametrize("seed", range(5))
def test_any_bytes_render(seed):
    rng = random.Random(seed)
    payloads = [rng.randbytes(rng.randint(1, 3000)) for _ in range(10)]
    payloads += [b"GET /\x00\x07\x1b[31m$HOME HTTP/1.1\r\n\r\n",  # control chars in a request line
                 b"\xff\xfe\xc3\x28 not UTF-8", "caf\u00e9 \u202e\u0000".encode(),
                 b"x" * 200_000]
    segs = _payload_segments(payloads)
    fig = ladder(segs)
    _render(fig)
    for text in fig.axes[0].texts:
        label = text.get_text()
        assert len(label) <= LABEL_MAX and all(c.isprintable() or c == "\n" for c in label)
    for row in Table(segs).rows:
        assert all(cell.isprintable() for cell in row)


# -- ladders that stay legible at any size ------------------------------------------------------
def _long_exchange(n):
    pkts = [tcp(C, S, "S", 0)] + [tcp(C, S, "PA", 1 + i, 0, b"x", t=i / 1000)
                                  for i in range(n - 1)]
    return segments(pkts, {8080: "server"})


def _roles(fig):
    """The lifelines' names, left to right."""
    names = [t for t in fig.axes[0].texts if t.get_fontweight() == "bold"]
    return [t.get_text() for t in sorted(names, key=lambda t: t.get_position()[0])]


def _notes(fig):
    return [t.get_text() for t in fig.axes[0].texts if "packets" in t.get_text()]


def test_ladder_draws_the_first_40_packets_and_says_how_many_more():
    fig = ladder(_long_exchange(300))
    assert len(arrows(fig)) == MAX_PACKETS == 40
    assert any(n.startswith("… 260 more packets; pass rows= to choose") for n in _notes(fig))
    width, height = fig.get_size_inches()
    assert height < 40 and width <= 4.5 * 12
    assert _notes(ladder(_long_exchange(40))) == []     # all of it: nothing to say


def test_ladder_rows_picks_rows():
    segs = _long_exchange(300)
    fig = ladder(segs, rows=range(100, 130))
    assert len(arrows(fig)) == 30 and _notes(fig) == []
    assert len(arrows(ladder(segs, rows=slice(290, None)))) == 10
    assert len(arrows(ladder(segs, rows=[0, 5, -1]))) == 3
    with pytest.raises(ValueError, match="rows 0 to 299"):
        ladder(segs, rows=[300])
    with pytest.raises(TypeError, match="slice, range or list"):
        ladder(segs, rows=40)


def test_packets_is_the_old_name_of_rows_and_says_so():
    """``packets=`` picked rows but read as Scapy's packet list: it still works, with a
    DeprecationWarning that points at the caller's own line."""
    segs = _long_exchange(300)
    with pytest.warns(DeprecationWarning, match=r"ladder\(packets=\.\.\.\) is now ladder\("
                      r"rows=\.\.\.\)") as caught:
        fig = ladder(segs, packets=range(100, 130))
    assert len(arrows(fig)) == 30
    assert caught[0].filename == __file__
    with pytest.warns(DeprecationWarning, match=r"Table\(packets="):
        assert len(Table(segs, packets=[1, 2])) == 2
    with pytest.raises(TypeError, match="not both"):
        Table(segs, rows=[1], packets=[2])


def test_ladder_pages_cut_a_long_capture_into_slides():
    segs = _long_exchange(30)                        # two-line labels, but the SYN's
    pages = [ladder(segs, page=n) for n in range(1, 6)]
    drawn = [len(arrows(fig)) for fig in pages]
    assert drawn == [7, 6, 6, 6, 5]                 # every packet once, none lost at a cut
    assert all(1 + 1.6 * (n - 1) <= PAGE_ROWS for n in drawn)  # 1 row a line, 0.6 more
    assert "page 1: packets 0 to 6; 23 more on page=2" in _notes(pages[0])
    assert "page 5: packets 25 to 29 (the last)" in _notes(pages[4])
    assert max(fig.get_size_inches()[1] for fig in pages) * DPI <= 760  # 80 %: 608 px of 720
    with pytest.raises(ValueError, match="past the end: these 30 packets make 5 pages"):
        ladder(segs, page=6)
    with pytest.raises(ValueError, match="counts from 1"):
        ladder(segs, page=0)
    # every page draws the same lifelines in the same places, even one where a role is quiet
    later = _many_connections(3)                      # client, client 2, then client 3
    assert [_roles(ladder(later, page=n)) for n in (1, 2, 3)] == [
        ["client", "client 2", "client 3", "server"]] * 3
    # pages of the packets chosen (by packets=, or of one connection)
    first = _notes(ladder(segs, rows=range(10, 30), page=1))[0]
    assert first.startswith("page 1: packets 10 to 15;")


def test_ladder_text_reads_from_the_back_of_a_room():
    """Every text is at least 18 px on a 1280x720 slide when the deck shows the figure at
    80 % of its size (the least its fit() allows)."""
    segs = _payload_segments([b"GET / HTTP/1.1", b"x" * 100])
    fig = ladder(segs, title="echo", note="connection 1")
    for text in [*fig.axes[0].texts, fig.axes[0].title]:
        if text.get_text():
            assert text.get_fontsize() * DPI / 72 * 0.8 >= 18, text.get_text()
    assert pytest.approx(18) == FONT * DPI / 72 * 0.8
    assert fig.get_dpi() == DPI


def test_long_labels_wrap_within_their_arrows_span():
    """A label as long as a TLS flight's (a protocol view's) wraps to the room between its two
    lifelines (it would run over the times column and other arrows), at most LABEL_LINES
    lines; a payload preview's "(+N bytes)" is never cut in two."""
    from labkit.views.ladder import CHAR_INCHES, LABEL_LINES, _width, _wrap

    flight = "ServerHello · ChangeCipherSpec\nencrypted: " + " · ".join(["CertificateVerify"] * 12)
    seg = _payload_segments([b"x"])[0]
    lines = _wrap(flight, seg, {"client": 0, "server": 1}).split("\n")
    assert lines[0] == "ServerHello · ChangeCipherSpec" and len(lines) == LABEL_LINES
    room = _width(2) / 1.8 / CHAR_INCHES   # two lifelines, 1.8 of their spacings wide
    assert all(len(line) <= room for line in lines) and lines[-1].endswith(" …")
    shorter = "encrypted: " + " · ".join(["CertificateVerify"] * 6)
    neighbours, apart = ({"client": 0, "server": n} for n in (1, 2))  # two spans: more room
    assert _wrap(shorter, seg, apart).count("\n") < _wrap(shorter, seg, neighbours).count("\n")
    preview = "ACK len=1448 seq=1 ack=1\nb'GGGGGGGGGGGGGGGGGGGGGGGG' … (+1424 bytes)"
    assert _wrap(preview, seg, neighbours).count("\n") == 1          # fits: two lines
    assert _wrap(preview, seg, {"client": 0, "server": 1, "r1": 2, "r2": 3}).split("\n")[-1] == (
        "(+1424\u00a0bytes)")          # four lifelines, less room each: never cut in two


def _many_connections(n, *, ends=("FA",), together=False):
    """n short connections from n client ports: handshake, 5 bytes each way, an end;
    one after another, or ``together`` (each one's first packet, then each one's second...)."""
    scripts = []
    for k in range(n):
        c = ("127.0.0.1", 41000 + k)
        script = [(c, S, "S", 0, 0, b""), (S, c, "SA", 0, 1, b""), (c, S, "A", 1, 1, b""),
                  (c, S, "PA", 1, 1, b"hello"), (S, c, "PA", 1, 6, b"HELLO!")]
        end = ends[k % len(ends)]
        script += [(c, S, end, 6, 7, b"")] + ([(S, c, "FA", 7, 7, b""), (c, S, "A", 7, 8, b"")]
                                               if end == "FA" else [])
        scripts.append(script)
    order = [p for row in itertools.zip_longest(*scripts) for p in row if p] if together else \
        [p for script in scripts for p in script]
    return segments([tcp(*p, t=i / 1000) for i, p in enumerate(order)], {8080: "server"})


def test_many_connections_never_make_a_giant_ladder():
    segs = _many_connections(20, together=True)
    fig = ladder(segs)                               # the default view: what fits
    roles = {t.get_text() for t in fig.axes[0].texts if t.get_fontweight() == "bold"}
    assert len(roles) <= MAX_LIFELINES and fig.get_size_inches()[0] <= 4.5 * MAX_LIFELINES
    assert any("connection=" in n and "wire.connections()" in n for n in _notes(fig))
    with pytest.raises(ValueError, match=r"wire.ladder\(connection=1\).*wire.connections\(\)"):
        ladder(segs, rows=slice(None))               # asked for all 21 lifelines


# -- one row per connection ---------------------------------------------------------------------
def test_connections_one_row_each_with_how_it_went():
    segs = _many_connections(3, ends=("FA", "RA", "A"))
    summary = Connections(segs)
    assert len(summary) == 3
    first, reset, still_open = summary[1], summary[2], summary[3]
    assert (first.client, first.server, first.sent, first.received) == ("client", "server", 5, 6)
    assert [c.ended for c in summary.connections] == ["FIN", "RST", "open"]
    assert first.handshake == pytest.approx(0.002) and len(first.segments) == 8
    lines = str(summary).splitlines()
    assert lines[0].split()[:3] == ["#", "proto", "client"]
    assert lines[2].split() == ["1", "TCP", "client", "→", "server", "2.00", "ms", "5", "6", "8",
                                "7.00", "ms", "FIN"]
    assert lines[3].split()[2] == "client" and lines[3].split()[3:5] == ["2", "→"]
    assert summary._repr_html_().count("<tr") == 1 + 3
    assert reset.duration == pytest.approx(0.005) and still_open.handshake is not None


def test_a_new_syn_on_the_same_ports_is_a_new_connection_and_udp_conversations_count():
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    again = [tcp(C, S, "S", 0, t=1.0), tcp(S, C, "SA", 0, 1, t=1.001),
             tcp(C, S, "A", 1, 1, t=1.002), tcp(C, S, "RA", 1, 1, t=1.003)]
    datagram = Ether() / IP(src="127.0.0.1", dst="127.0.0.1") / UDP(sport=5353, dport=53) / b"q"
    datagram.time = 1.004
    segs = segments(conversation() + again + [datagram], {8080: "server", 53: "dns"})
    summary = Connections(segs)
    assert [(c.proto, c.ended, len(c.segments)) for c in summary.connections] == [
        ("TCP", "FIN", 8), ("TCP", "RST", 4), ("UDP", "—", 1)]
    chosen, conn = connection_segments(segs, 2)
    assert [s.index for s in chosen] == [8, 9, 10, 11] and conn.number == 2
    with pytest.raises(ValueError, match="numbered 1 to 3"):
        connection_segments(segs, 4)


def test_connections_of_a_recording_through_the_capture(monkeypatch):
    from labkit import Capture

    monkeypatch.setenv("LABKIT_CAPTURE", "replay")
    with Capture(8080, name="07-iterative") as wire:   # two clients, one after the other
        pass
    summary = wire.connections()
    assert len(summary) == 2 and summary[2].client == "client 2"
    fig = wire.ladder(connection=2)
    assert len(arrows(fig)) == len(summary[2].segments)
    assert any(t.get_text().startswith("connection 2: TCP client 2 → server")
               for t in fig.axes[0].texts)
    table = wire.table(connection=2)
    assert {row[2] for row in table.rows} <= {"client 2 → server", "server → client 2"}
    assert len(wire.table(stop=3)) == 3 and len(wire.table(rows=range(2, 5))) == 3
    with pytest.raises(ValueError, match="not both"):
        wire.table(stop=3, rows=range(3))
    with pytest.warns(DeprecationWarning, match=r"table\(packets=") as caught:
        assert len(wire.table(packets=range(2, 5))) == 3
    assert caught[0].filename == __file__   # the student's own line, not labkit's


# -- tables of long captures ----------------------------------------------------------------------
def test_table_shows_200_rows_and_says_how_many_more():
    table = Table(_long_exchange(300))
    assert len(table) == 200
    assert str(table).splitlines()[-1].startswith("… 100 more packets; pass rows= to choose")
    html = table._repr_html_()
    assert html.count("<tr") == 1 + 200 and "100 more packets" in html
    assert len(Table(_long_exchange(300), rows=range(250, 300))) == 50


def test_a_probe_a_router_dropped_ends_at_that_router_with_its_ttl():
    import packets

    hosts = {"10.0.0.1": "client", "10.0.0.2": "r1", "10.0.1.3": "server"}
    segs = segments(packets.arp_then_traceroute(), {}, {"hosts": hosts})
    fig = ladder(segs, order=["client", "r1", "server"])
    ax = fig.axes[0]
    x = {t.get_text(): t.get_position()[0] for t in ax.texts
         if t.get_text() in ("client", "r1", "server")}
    tips = [arrow._posA_posB[1][0] for arrow in arrows(fig)]
    # row 2: the TTL-1 probe dies at r1; row 4: the TTL-2 probe reaches the server (its
    # port unreachable comes from the destination itself, so it arrived)
    assert abs(tips[2] - x["r1"]) < 0.1, f"TTL-1 probe ends at {tips[2]}, r1 is at {x['r1']}"
    assert tips[4] == x["server"], f"TTL-2 probe ends at {tips[4]}, server is at {x['server']}"
    texts = [t.get_text() for t in ax.texts]
    assert any(t.startswith("UDP len=5 ttl=1") for t in texts), texts
    assert "TTL ran out" in texts and not any("ttl=2" in t for t in texts), texts
