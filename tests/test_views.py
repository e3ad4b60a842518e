from matplotlib.patches import FancyArrowPatch
from packets import C, S, conversation, tcp

from labkit import Table, ladder
from labkit.capture.flows import segments


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
