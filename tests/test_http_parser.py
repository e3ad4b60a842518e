"""labkit.protocols.http_parser against h11, an independent HTTP/1.1 parser.

One table of requests, valid and invalid, each fed to both parsers: they must agree on
accept/refuse and, where both accept, on what they read (method, target, headers, body).
Where labkit is deliberately stricter (or looser) than h11, the case is listed in
``DIFFERENCES`` with h11's verdict and the RFC reason; such a case must really differ, so
a stale entry fails too.  Every case is also fed split at every byte boundary and one byte
at a time: where a read ends must not change the verdict (a sans-IO parser's promise).
"""

from __future__ import annotations

from dataclasses import dataclass

import h11
import pytest

from labkit.protocols.http_parser import (
    MAX_BODY,
    MAX_HEAD,
    MAX_REQUEST_LINE,
    NEED_DATA,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Limits,
    ParseError,
    RequestHead,
    RequestParser,
)


@dataclass(frozen=True)
class Outcome:
    """What a parser made of a byte stream: the requests it completed, then either a
    clean end (``refused`` None) or the status it refused with."""

    requests: tuple
    refused: int | None

    @property
    def accepted(self) -> bool:
        return self.refused is None


def _normal(headers) -> tuple:
    """Headers as h11 reports them: names lower-case; the two framing headers in h11's
    canonical form (Content-Length "3, 3" → "3", Transfer-Encoding lower-case)."""
    out = []
    for name, value in headers:
        name, value = name.lower(), value
        if name == "content-length":
            value = ", ".join(sorted({v.strip() for v in value.split(",")}))
        elif name == "transfer-encoding":
            value = value.lower()
        out.append((name, value))
    return tuple(out)


def labkit_reads(pieces: list[bytes], limits: Limits = Limits()) -> Outcome:
    parser, done, head, body = RequestParser(limits), [], None, b""
    try:
        for piece in [*filter(None, pieces), b""]:  # b"": the client closed
            parser.feed(piece)
            while (event := parser.next_event()) not in (NEED_DATA, ConnectionClosed):
                if isinstance(event, RequestHead):
                    head, body = event, b""
                elif isinstance(event, Data):
                    body += event.data
                else:
                    assert isinstance(event, EndOfMessage)
                    done.append((head.method, head.target, head.version,
                                 _normal(head.headers), body, _normal(event.trailers)))
    except ParseError as error:
        return Outcome(tuple(done), error.status)
    return Outcome(tuple(done), None)


def h11_reads(pieces: list[bytes]) -> Outcome:
    """h11's reading, fed at most 4 KiB at a time as a socket would: h11 bounds only what
    it holds *incomplete*, so a 20 KiB head fed at once would pass its limit unseen."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    done, head, body = [], None, b""
    pieces = [p[i:i + 4096] for p in pieces for i in range(0, len(p), 4096)]
    try:
        for piece in [*pieces, b""]:
            conn.receive_data(piece)
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                    break
                if event is h11.PAUSED:  # h11 waits for our response before the next request
                    conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
                    conn.send(h11.EndOfMessage())
                    conn.start_next_cycle()
                elif isinstance(event, h11.Request):
                    head, body = event, b""
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    done.append((head.method.decode(), head.target.decode("latin-1"),
                                 "HTTP/" + head.http_version.decode(),
                                 tuple((n.decode(), v.decode("latin-1")) for n, v in head.headers),
                                 body,
                                 tuple((n.decode(), v.decode("latin-1"))
                                       for n, v in event.headers)))
    except h11.RemoteProtocolError as error:
        return Outcome(tuple(done), error.error_status_hint)
    return Outcome(tuple(done), None)


# -- the table ---------------------------------------------------------------------------
GET = b"GET /hello HTTP/1.1\r\nHost: lab\r\n"       # + more headers, then b"\r\n"
CHUNKED = b"POST /echo HTTP/1.1\r\nHost: lab\r\nTransfer-Encoding: chunked\r\n\r\n"
BIG = MAX_BODY + 1

# name → (bytes the client sends, labkit's verdict: None = accepted, else the status)
CASES = {
    # -- valid: both must accept, and read the same ----------------------------------------
    "simple GET": (GET + b"\r\n", None),
    "OWS around values": (GET + b"X-A:  spaced\t \r\nX-B:\tx\r\n\r\n", None),
    "empty value": (GET + b"X-Empty:\r\n\r\n", None),
    "tab inside a value": (GET + b"X-A: a\tb\r\n\r\n", None),
    "obs-text in a value": (GET + b"X-A: caf\xc3\xa9\r\n\r\n", None),
    "empty Host": (b"GET / HTTP/1.1\r\nHost:\r\n\r\n", None),
    "HTTP/1.0 without Host": (b"GET / HTTP/1.0\r\n\r\n", None),
    "HTTP/1.2 (minor versions are compatible)": (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", None),
    "absolute-form": (b"GET http://lab/hello?x=1 HTTP/1.1\r\nHost: lab\r\n\r\n", None),
    "absolute-form with IPv6": (b"GET http://[::1]:80/ HTTP/1.1\r\nHost: lab\r\n\r\n", None),
    "asterisk-form": (b"OPTIONS * HTTP/1.1\r\nHost: lab\r\n\r\n", None),
    "unusual method token": (b"M-SEARCH! / HTTP/1.1\r\nHost: lab\r\n\r\n", None),
    "Content-Length body": (b"POST /echo HTTP/1.1\r\nHost: lab\r\nContent-Length: 5\r\n\r\nhello",
                            None),
    "Content-Length 0": (GET + b"Content-Length: 0\r\n\r\n", None),
    "Content-Length with leading zeros": (GET + b"Content-Length: 03\r\n\r\nabc", None),
    "Content-Length repeated, equal": (GET + b"Content-Length: 3, 3\r\n\r\nabc", None),
    "body with CRLFs in it": (GET + b"Content-Length: 8\r\n\r\n\r\n\r\nab\r\n", None),
    "chunked": (CHUNKED + b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", None),
    "chunked, upper-case hex": (CHUNKED + b"1A\r\n" + b"z" * 26 + b"\r\n0\r\n\r\n", None),
    "chunked, extension": (CHUNKED + b"5;lang=en\r\nhello\r\n0;x\r\n\r\n", None),
    "chunked, trailers": (CHUNKED + b"3\r\nabc\r\n0\r\nExpires: never\r\nX-T: 1\r\n\r\n", None),
    "chunked, OWS after the size": (CHUNKED + b"3 \r\nabc\r\n0\r\n\r\n", None),
    "Transfer-Encoding: Chunked (any case)": (GET + b"Transfer-Encoding: Chunked\r\n\r\n0\r\n\r\n",
                                              None),
    "pipelined, 3 requests": (GET + b"\r\n" + b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 2"
                              b"\r\n\r\nhi" + CHUNKED + b"2\r\nok\r\n0\r\n\r\n", None),
    "head exactly at MAX_HEAD": (GET + b"X: " + b"a" * (MAX_HEAD - len(GET) - 7) + b"\r\n\r\n",
                                 None),

    # -- invalid: both must refuse ------------------------------------------------------------
    "space before colon (RFC 9112 §5.1)": (GET + b"X-A : 1\r\n\r\n", 400),
    "tab before colon": (GET + b"X-A\t: 1\r\n\r\n", 400),
    "empty header name": (GET + b": x\r\n\r\n", 400),
    "header without colon": (GET + b"nocolon\r\n\r\n", 400),
    "invalid token char in a name": (GET + b"X@A: 1\r\n\r\n", 400),
    "invalid token char in the method": (b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "NUL in a value": (GET + b"X-A: a\x00b\r\n\r\n", 400),
    "missing Host in HTTP/1.1": (b"GET / HTTP/1.1\r\n\r\n", 400),
    "two Host headers": (GET + b"Host: other\r\n\r\n", 400),
    "duplicate Content-Length, different": (GET + b"Content-Length: 1\r\nContent-Length: 2"
                                            b"\r\n\r\nab", 400),
    "Content-Length list, different": (GET + b"Content-Length: 1, 2\r\n\r\nab", 400),
    "Content-Length negative": (GET + b"Content-Length: -1\r\n\r\n", 400),
    "Content-Length with a sign": (GET + b"Content-Length: +3\r\n\r\nabc", 400),
    "Content-Length not a number": (GET + b"Content-Length: abc\r\n\r\n", 400),
    "Content-Length short body": (GET + b"Content-Length: 10\r\n\r\nabc", 400),
    "Transfer-Encoding gzip": (GET + b"Transfer-Encoding: gzip\r\n\r\nab", 400),
    "Transfer-Encoding chunked twice": (GET + b"Transfer-Encoding: chunked, chunked\r\n\r\n"
                                        b"0\r\n\r\n", 400),
    "bad chunk size": (CHUNKED + b"zz\r\nab\r\n0\r\n\r\n", 400),
    "chunk size with a leading space": (CHUNKED + b" 3\r\nabc\r\n0\r\n\r\n", 400),
    "chunk size empty": (CHUNKED + b"\r\nabc\r\n0\r\n\r\n", 400),
    "chunk data without its CRLF": (CHUNKED + b"3\r\nabcXY0\r\n\r\n", 400),
    "bare LF in a chunk extension": (CHUNKED + b"5;a\nb\r\nhello\r\n0\r\n\r\n", 400),
    "bare LF after a chunk size": (CHUNKED + b"5\n\r\nhello\r\n0\r\n\r\n", 400),
    "bare LF ending a chunk-size line": (CHUNKED + b"5\nhello\r\n0\r\n\r\n", 400),
    "chunked, closed mid-body": (CHUNKED + b"5\r\nab", 400),
    "chunked, no last chunk": (CHUNKED + b"3\r\nabc\r\n", 400),
    "trailer with space before colon": (CHUNKED + b"0\r\nX-T : 1\r\n\r\n", 400),
    "two spaces in the request line": (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "space in the target": (b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "non-ASCII in the target": (b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "no version": (b"GET /\r\nHost: a\r\n\r\n", 400),
    "lower-case version": (b"GET / http/1.1\r\nHost: a\r\n\r\n", 400),
    "empty line before the request line": (b"\r\n" + GET + b"\r\n", 400),
    "not HTTP at all": (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 400),
    "closed mid-head": (GET, 400),
    "many headers": (GET + b"X: y\r\n" * (MAX_HEAD // 3) + b"\r\n", 431),
    "pipelined, the second one broken": (GET + b"\r\n" + b"GET / HTTP/1.1\r\nX : 1\r\n\r\n", 400),

    # -- where labkit and h11 differ on purpose: see DIFFERENCES --------------------------------
    "bare LF ending a header": (b"GET / HTTP/1.1\r\nHost: a\n\r\n", 400),
    "bare LF everywhere": (b"GET / HTTP/1.1\nHost: a\n\n", 400),
    "bare LF in a trailer": (CHUNKED + b"0\r\nX-T: 1\nX-U: 2\r\n\r\n", 400),
    "bare CR in a chunk extension": (CHUNKED + b"5;a\rb\r\nhello\r\n0\r\n\r\n", 400),
    "control character in a chunk extension": (CHUNKED + b"5;a\x01b\r\nhello\r\n0\r\n\r\n",
                                               400),
    "Transfer-Encoding in HTTP/1.0": (b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
                                      b"5\r\nhello\r\n0\r\n\r\n", 400),
    "obs-fold (RFC 9112 §5.2)": (GET + b"X-A: 1\r\n  continued\r\n\r\n", 400),
    "Content-Length and Transfer-Encoding": (GET + b"Content-Length: 3\r\nTransfer-Encoding: "
                                             b"chunked\r\n\r\n0\r\n\r\n", 400),
    "control character in a value": (GET + b"X-A: a\x01b\r\n\r\n", 400),
    "DEL in a value": (GET + b"X-A: a\x7fb\r\n\r\n", 400),
    "target without a leading /": (b"GET hello HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "absolute-form, broken IPv6 host": (b"GET http://[/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "absolute-form, empty host": (b"GET http:///hello HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "HTTP/2.0 in an HTTP/1 request line": (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    "request line over MAX_REQUEST_LINE": (b"GET /" + b"a" * MAX_REQUEST_LINE + b" HTTP/1.1\r\n"
                                           b"Host: a\r\n\r\n", 414),
    "Content-Length over MAX_BODY": (GET + b"Content-Length: %d\r\n\r\n" % BIG + b"x" * BIG, 413),
    "chunked body over MAX_BODY": (CHUNKED + b"%x\r\n" % BIG + b"x" * BIG + b"\r\n0\r\n\r\n", 413),
    "chunk-size longer than 8 hex digits": (CHUNKED + b"000000003\r\nabc\r\n0\r\n\r\n", 400),
    "head one byte over MAX_HEAD": (GET + b"X: " + b"a" * (MAX_HEAD - len(GET) - 6) + b"\r\n\r\n",
                                    431),
    "BWS before a chunk extension (RFC 9112 §7.1.1)": (CHUNKED + b"3 ;ext\r\nabc\r\n0\r\n\r\n",
                                                       None),
}

# name → (h11's verdict: None = accepts, else its status hint; why labkit differs)
DIFFERENCES = {
    "bare LF ending a header": (None, "RFC 9112 §2.2 lets a recipient accept a bare LF as a line "
                                "end; labkit refuses it, so no parser behind it can read the lines "
                                "differently (request smuggling)"),
    "bare LF everywhere": (None, "RFC 9112 §2.2, as above"),
    "bare LF in a trailer": (None, "RFC 9112 §2.2 and §7.1.2: trailers are field lines, held to "
                             "the same CRLF rule as the headers"),
    "bare CR in a chunk extension": (None, "RFC 9112 §2.2: a recipient MUST treat a bare CR as "
                                     "invalid (or replace it with SP); labkit refuses it, in "
                                     "framing as in the head. h11's chunk-ext is ';.*', which "
                                     "takes a CR"),
    "control character in a chunk extension": (None, "RFC 9112 §7.1.1: chunk-ext-val is a token "
                                               "or a quoted-string, neither holds a control; h11 "
                                               "takes anything after ';' up to CRLF"),
    "Transfer-Encoding in HTTP/1.0": (None, "RFC 9112 §6.1: a server that receives an HTTP/1.0 "
                                      "message with Transfer-Encoding MUST treat its framing as "
                                      "faulty and close the connection; h11 decodes it as chunked"),
    "obs-fold (RFC 9112 §5.2)": (None, "RFC 9112 §5.2: a server MUST either reject obs-fold with "
                                 "400 or replace it with SP; h11 unfolds, labkit rejects"),
    "Content-Length and Transfer-Encoding": (None, "RFC 9112 §6.1: a server MAY reject a request "
                                             "with both; §11.2: this is request smuggling's "
                                             "classic form. h11 lets Transfer-Encoding win"),
    "control character in a value": (None, "RFC 9110 §5.5: field-vchar is VCHAR or obs-text; h11 "
                                     "refuses only NUL, CR and LF"),
    "DEL in a value": (None, "RFC 9110 §5.5 (DEL, 0x7F, is not VCHAR)"),
    "target without a leading /": (None, "RFC 9112 §3.2: the target is origin-form (/...), "
                                   "absolute-form, authority-form (CONNECT only) or '*'; h11 "
                                   "accepts any visible characters"),
    "absolute-form, broken IPv6 host": (None, "RFC 9112 §3.2.2: absolute-form is an absolute-URI "
                                        "(RFC 3986); '[' starts an IP literal that never ends"),
    "absolute-form, empty host": (None, "RFC 9110 §4.2.1: a recipient MUST reject an http URI "
                                  "with an empty host as invalid"),
    "HTTP/2.0 in an HTTP/1 request line": (None, "RFC 9110 §15.6.6: 505 for a major version the "
                                           "server does not support; h11 leaves versions to you"),
    "request line over MAX_REQUEST_LINE": (None, "RFC 9112 §3: a server MUST answer 414 to a "
                                           "target longer than it will parse (it is RECOMMENDED "
                                           "to take 8000 octets; labkit takes 8 KiB); h11 bounds "
                                           "only the whole head"),
    "Content-Length over MAX_BODY": (None, "RFC 9110 §15.5.14: 413 for content larger than the "
                                     "server will process; h11 streams any size to its caller"),
    "chunked body over MAX_BODY": (None, "RFC 9110 §15.5.14, as above"),
    "chunk-size longer than 8 hex digits": (None, "RFC 9112 §7.1: recipients MUST anticipate large "
                                            "sizes and prevent integer overflow; 8 digits (4 GiB) "
                                            "is far past MAX_BODY, so labkit parses no more"),
    "head one byte over MAX_HEAD": (None, "RFC 9110 §5.4: a server MUST answer a 4xx to fields "
                                    "larger than it wishes to process. labkit bounds the head "
                                    "(431 past MAX_HEAD, however it arrives); h11 bounds only "
                                    "what it holds incomplete, so a head that completes in the "
                                    "read that crosses the limit passes"),
    "BWS before a chunk extension (RFC 9112 §7.1.1)": (
        400, "labkit is looser here: RFC 9112 §7.1.1's grammar allows BWS before ';' "
             "(chunk-ext = *( BWS \";\" ... )); h11 refuses it"),
}

ORACLE_CASES = sorted(CASES)


def test_the_table_is_consistent():
    assert set(DIFFERENCES) <= set(CASES)
    assert len(CASES) >= 70
    assert sum(v is None for _, v in CASES.values()) >= 25  # enough valid requests, too


@pytest.mark.parametrize("name", ORACLE_CASES)
def test_labkit_and_h11_agree(name):
    raw, expected = CASES[name]
    ours, theirs = labkit_reads([raw]), h11_reads([raw])
    assert ours.refused == expected, f"labkit: {ours}"
    if name in DIFFERENCES:
        h11_status, why = DIFFERENCES[name]
        assert theirs.refused == h11_status, f"h11 no longer differs ({why}): {theirs}"
        assert ours.accepted != theirs.accepted
        return
    assert ours.accepted == theirs.accepted, f"labkit {ours.refused}, h11 {theirs.refused}"
    assert ours.requests == theirs.requests  # what each read before the end or the refusal
    if not ours.accepted and theirs.refused in (400, 431):  # (h11 says 501 for codings)
        assert ours.refused == theirs.refused


SMALL_CASES = [name for name in ORACLE_CASES if len(CASES[name][0]) <= 200]


@pytest.mark.parametrize("name", SMALL_CASES)
def test_any_split_gives_the_same_verdict(name):
    """Split at every byte boundary, and one byte per feed: the same requests, the same
    refusal (h11 too: the oracle's verdict does not depend on the split either)."""
    raw, _ = CASES[name]
    whole_ours, whole_theirs = labkit_reads([raw]), h11_reads([raw])
    for at in range(len(raw) + 1):
        assert labkit_reads([raw[:at], raw[at:]]) == whole_ours, f"split at {at}"
        assert h11_reads([raw[:at], raw[at:]]) == whole_theirs, f"h11, split at {at}"
    assert labkit_reads([raw[i:i + 1] for i in range(len(raw))]) == whole_ours


@pytest.mark.parametrize("name", [n for n in ORACLE_CASES if n not in SMALL_CASES])
def test_large_cases_in_pieces(name):
    raw, _ = CASES[name]
    pieces = [raw[i:i + 997] for i in range(0, len(raw), 997)]  # (a prime: no aligned splits)
    assert labkit_reads(pieces) == labkit_reads([raw])


# -- what the server relies on -------------------------------------------------------------
def test_refusal_comes_before_the_head_is_complete():
    """Bare LF, a long line, a huge head: refused on the bytes so far, without waiting
    for a blank line that may never come (so a client is answered, not timed out)."""
    for start, status in [(b"GET / HTTP/1.1\nHost", 400),
                          (b"GET /" + b"a" * (MAX_REQUEST_LINE + 1), 414),
                          (b"\xff" * (MAX_REQUEST_LINE + 1), 400),
                          (GET + b"X: " + b"y" * MAX_HEAD, 431)]:
        parser = RequestParser()
        parser.feed(start)
        with pytest.raises(ParseError) as refused:
            parser.next_event()
        assert refused.value.status == status and refused.value.reason
        with pytest.raises(ParseError):  # and it stays refused: the framing is lost
            parser.next_event()


def test_raw_is_each_request_exactly_as_received():
    raw = CASES["pipelined, 3 requests"][0]
    parser = RequestParser()
    parser.feed(raw)
    parts = []
    while (event := parser.next_event()) is not NEED_DATA:
        if isinstance(event, EndOfMessage):
            parts.append(event.raw)
    assert len(parts) == 3 and b"".join(parts) == raw


def test_in_progress_tells_a_stall_from_an_idle_connection():
    idle = RequestParser()
    assert not idle.in_progress
    idle.feed(b"\r\n")  # a stray CRLF (a client's keep-alive habit) is not a request
    assert idle.next_event() is NEED_DATA and not idle.in_progress
    idle.feed(b"")
    assert idle.next_event() is ConnectionClosed
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab")
    assert parser.in_progress
    assert isinstance(parser.next_event(), RequestHead) and parser.in_progress
    assert parser.next_event() == Data(b"ab") and parser.in_progress
    assert parser.next_event() is NEED_DATA


def test_clean_close_between_requests():
    parser = RequestParser()
    parser.feed(GET + b"\r\n")
    parser.feed(b"")
    events = [parser.next_event() for _ in range(3)]
    assert isinstance(events[0], RequestHead) and isinstance(events[1], EndOfMessage)
    assert events[2] is ConnectionClosed
    with pytest.raises(RuntimeError, match="already closed"):
        parser.feed(b"more")


def test_limits_are_the_callers():
    limits = Limits(request_line=20, head=60, body=5, chunked=200, chunk_line=10)
    assert labkit_reads([b"GET /" + b"a" * 20 + b" HTTP/1.1\r\n"], limits).refused == 414
    assert labkit_reads([GET + b"X: " + b"a" * 40 + b"\r\n\r\n"], limits).refused == 431
    assert labkit_reads([GET + b"Content-Length: 6\r\n\r\nabcdef"], limits).refused == 413
    assert labkit_reads([GET + b"Content-Length: 5\r\n\r\nabcde"], limits).accepted
    many = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert labkit_reads([many + b"0;" + b"x" * 9 + b"\r\n\r\n"], limits).refused == 400
    assert labkit_reads([many + b"1;xxxxx\r\na\r\n" * 20], limits).refused == 413


def test_reasons_name_the_problem():
    reasons = {}
    for name in ["space before colon (RFC 9112 §5.1)", "bare LF everywhere",
                 "Content-Length and Transfer-Encoding", "missing Host in HTTP/1.1",
                 "obs-fold (RFC 9112 §5.2)"]:
        parser = RequestParser()
        parser.feed(CASES[name][0])
        with pytest.raises(ParseError) as refused:
            while parser.next_event() is not NEED_DATA:
                pass
        reasons[name] = refused.value.reason
    assert "no space is allowed before the colon" in reasons["space before colon (RFC 9112 §5.1)"]
    assert "bare \\n" in reasons["bare LF everywhere"]
    assert "request smuggling" in reasons["Content-Length and Transfer-Encoding"]
    assert "Host" in reasons["missing Host in HTTP/1.1"]
    assert "obsolete line folding" in reasons["obs-fold (RFC 9112 §5.2)"]
