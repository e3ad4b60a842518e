"""labkit.views.waterfall: Timing arithmetic and the waterfall figure."""

import pytest

from labkit import Timing, waterfall


def test_durations_and_total():
    t = Timing("/slow", 10.0, 10.001, 10.0012, 10.5012, 10.5013, nbytes=120)
    d = t.durations
    assert d["connect"] == pytest.approx(0.001) and d["wait"] == pytest.approx(0.5)
    assert d["send"] == pytest.approx(0.0002) and d["receive"] == pytest.approx(0.0001)
    assert t.total == pytest.approx(0.5013) and sum(d.values()) == pytest.approx(t.total)


def test_readings_out_of_order_name_the_fix():
    with pytest.raises(ValueError, match="perf_counter"):
        Timing("/x", 1.0, 0.5, 2.0, 3.0, 4.0)


def test_figure_has_one_row_per_request_and_a_title():
    rows = [Timing("/hello", 0, 0.0001, 0.00012, 0.0003, 0.0004),
            Timing("/slow", 0.001, 0.0011, 0.00112, 0.40, 0.4001)]
    fig = waterfall(rows, title="waiting dominates")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["/hello", "/slow"]
    assert ax.get_title() == "waiting dominates"
    assert len(ax.patches) == 8  # 4 phases × 2 requests
    assert "ms" in ax.get_xlabel()


def test_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        waterfall([])
    with pytest.raises(TypeError, match="Timing"):
        waterfall([{"connect": 1}])


def test_relative_to_shifts_every_reading():
    t = Timing("/x", 5.0, 5.1, 5.2, 5.3, 5.4).relative_to(5.0, label="first")
    assert (t.label, t.start, t.last_byte) == ("first", 0.0, pytest.approx(0.4))
    assert t.durations["wait"] == pytest.approx(0.1)
