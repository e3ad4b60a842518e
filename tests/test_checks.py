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


def test_unfinished_code_gets_a_verdict_not_a_traceback():
    import asyncio
    import socket

    import pytest

    from labkit import TCPServer
    from labkit.checks import NOT_WRITTEN, answers_back

    def todo(*args):
        raise NotImplementedError()

    @answers_back
    def check_direct(f):
        return f()

    @answers_back
    def check_in_a_server(handler):
        with TCPServer(handler) as server, socket.create_connection(server.address) as c:
            assert c.recv(1) == b""  # the handler ran, raised, and its connection closed

    @answers_back
    async def check_async(f):
        return f()

    @answers_back
    def check_with_a_real_bug(f):
        return 1 / 0

    assert check_direct(todo) is NOT_WRITTEN
    assert check_in_a_server(todo) is NOT_WRITTEN  # ServerError caused by NotImplementedError
    assert asyncio.run(check_async(todo)) is NOT_WRITTEN
    with pytest.raises(ZeroDivisionError):
        check_with_a_real_bug(todo)
