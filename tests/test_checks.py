from labkit.checks import Verdict, first_failure, verdict


def test_verdicts_read_as_sentences():
    ok = verdict(True, "the ACK is 6", wrong="no", hint="h")
    bad = verdict(False, "the ACK is 6", wrong="you said 5; the ACK is 6", hint="SYN counts 1")
    assert bool(ok) and str(ok) == "✅ Right: the ACK is 6"
    assert not bad and str(bad) == "❌ Not yet: you said 5; the ACK is 6\n💡 Hint: SYN counts 1"
    assert "fdecea" in bad._repr_html_() and "<br>" in bad._repr_html_()


def test_first_failure():
    good = Verdict(True, "a")
    bad = Verdict(False, "b", "c")
    assert first_failure(good, bad, right="all") is bad
    assert first_failure(good, good, right="all") == Verdict(True, "all")
