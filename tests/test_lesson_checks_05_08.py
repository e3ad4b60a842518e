"""Lessons 05-08: each check says ❌ with the fitting hint to a student's likely mistake.

Right answers of lessons 06 and 07 are tested in test_tls.py and test_load.py.
"""

import asyncio
import socket
import ssl
import time
import urllib.parse

import websockets
from checking import run, says_right, says_wrong, wrong_answer_to

from labkit import Capture, TLSServer
from labkit.checks import lesson05, lesson06, lesson07, lesson08


# -- 05 Build an HTTP server -----------------------------------------------------------------
def greet_app(environ, start_response, *, decode=True, require_name=True, route=True,
              length=len, as_bytes=True):
    """The exercise's app; each keyword turns one part of it into a student's mistake."""
    if decode:
        query = {key: values[0] for key, values in
                 urllib.parse.parse_qs(environ["QUERY_STRING"]).items()}
    else:
        query = dict(pair.split("=", 1) for pair in environ["QUERY_STRING"].split("&") if pair)
    if route and environ["PATH_INFO"] != "/greet":
        status, text = "404 Not Found", "no such page\n"
    elif require_name and "name" not in query:
        status, text = "400 Bad Request", "say who to greet\n"
    else:
        status, text = "200 OK", f"Hello, {query.get('name', 'world')}!\n"
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(length(text)))])
    return [text.encode()] if as_bytes else [text]


def mistake(**kwargs):
    return lambda environ, start_response: greet_app(environ, start_response, **kwargs)


@wrong_answer_to(lesson05.check_greet)
def test_greet_app_mistakes_get_the_hint_for_their_request():
    for wrong, message, hint in [
            (mistake(decode=False), "Grace%20Hopper", "percent-encoded"),
            (mistake(require_name=False), "GET /greet answered 200, expected 400",
             "400 Bad Request"),
            (mistake(route=False), "GET /nowhere answered 400, expected 404", "404 Not Found"),
            (mistake(as_bytes=False), "your app raised TypeError", "a list of bytes"),
            (mistake(length=lambda text: len(text.strip())), "Content-Length 11",
             "counts the bytes of the encoded body")]:
        says_wrong(lesson05.check_greet(wrong), message=message, hint=hint)
    says_wrong(lesson05.check_greet("greet_app"), message="expected a WSGI app",
               hint="def greet_app(environ, start_response)")
    says_right(lesson05.check_greet(greet_app))


# -- 06 Secure a connection with TLS ---------------------------------------------------------
def diagnose_with(ctx, *, host=None, catch=True):
    """The exercise's diagnose() on context ``ctx``; host and catch make a student's mistakes."""
    def diagnose(address, hostname):
        try:
            with socket.create_connection(address, timeout=5) as raw:
                with ctx.wrap_socket(raw, server_hostname=host or hostname):
                    return "trusted"
        except ssl.SSLCertVerificationError as exc:
            if not catch:
                raise
            return {10: "expired", 62: "wrong name"}.get(exc.verify_code, "unknown CA")
    return diagnose


@wrong_answer_to(lesson06.check_diagnose)
def test_diagnose_that_trusts_nobody_everybody_or_one_name(ca):
    trusting = ssl.create_default_context(cafile=ca.cafile)
    says_wrong(lesson06.check_diagnose(None, ca), message="not written yet",
               hint="write your answer in the cell above")
    says_wrong(lesson06.check_diagnose(diagnose_with(ssl.create_default_context()), ca),
               message="diagnose said 'unknown CA'", hint="does not trust the lab CA")
    blind = ssl.create_default_context()
    blind.check_hostname, blind.verify_mode = False, ssl.CERT_NONE   # "make the error go away"
    says_wrong(lesson06.check_diagnose(diagnose_with(blind), ca), message="diagnose said 'trusted'",
               hint="never CERT_NONE")
    says_wrong(lesson06.check_diagnose(diagnose_with(trusting, host="localhost"), ca),
               message="asked for as 'www.example.org', diagnose said 'wrong name'",
               hint="verify_message")
    says_wrong(lesson06.check_diagnose(diagnose_with(trusting, catch=False), ca),
               message="SSLCertVerificationError escaped",
               hint="catch ssl.SSLCertVerificationError")
    says_wrong(lesson06.check_diagnose(lambda address, hostname: "Trusted", ca),
               message="returned 'Trusted'", hint="written exactly so")
    says_wrong(lesson06.check_diagnose(lambda address: "trusted", ca),     # a parameter short
               message="diagnose raised TypeError", hint="server_hostname=hostname")
    says_right(lesson06.check_diagnose(diagnose_with(trusting), ca))


def server_name(hello: bytes, *, decode=True) -> str | bytes:
    """The exercise's solution; decode=False is a student's mistake."""
    from scapy.layers.tls.record import TLS

    extension = next(e for e in TLS(hello).msg[0].ext if hasattr(e, "servernames"))
    name = extension.servernames[0].servername
    return name.decode() if decode else name


@wrong_answer_to(lesson06.check_server_name)
def test_server_name_as_bytes_hard_coded_or_guessed(ca, live):
    name = "intranet.netlab.test"
    with TLSServer(context=ca.server_context(name)) as server, Capture(server) as mystery:
        with socket.create_connection(server.address, timeout=5) as raw:
            with ca.client_context().wrap_socket(raw, server_hostname=name):
                pass
    says_wrong(lesson06.check_server_name(lambda h: server_name(h, decode=False), mystery),
               message="you returned bytes", hint="decode them")
    says_wrong(lesson06.check_server_name(lambda h: name, mystery),    # read off the mystery
               message="you returned 'intranet.netlab.test'", hint="server_name extension")
    says_wrong(lesson06.check_server_name(lambda h: h[:4].decode("latin-1"), mystery),
               message="you returned", hint="find that extension among the others")
    says_wrong(lesson06.check_server_name(None, mystery), message="not written yet",
               hint="the cell above")
    says_wrong(lesson06.check_server_name(name, mystery), message="give the function itself",
               hint="without parentheses")
    says_right(lesson06.check_server_name(server_name, mystery))


def versions_with(ca, *, pin_min=True, pin_max=True, trust=True, as_strings=False):
    """The exercise's versions_spoken(); the keywords make a student's mistakes."""
    def versions_spoken(address):
        spoken = set()
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            ctx = ssl.create_default_context(cafile=ca.cafile if trust else None)
            if pin_min:
                ctx.minimum_version = version
            if pin_max:
                ctx.maximum_version = version
            try:
                with socket.create_connection(address, timeout=5) as raw:
                    with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                        spoken.add(tls.version() if as_strings else version)
            except ssl.SSLError:
                pass
        return spoken
    return versions_spoken


@wrong_answer_to(lesson06.check_versions_spoken)
def test_versions_probed_with_one_end_of_the_range_pinned(ca):
    says_wrong(lesson06.check_versions_spoken(versions_with(ca, pin_max=False), ca),
               message="for a server that insists on TLS 1.3 you found {TLSv1_2, TLSv1_3}",
               hint="set both minimum_version and maximum_version")
    says_wrong(lesson06.check_versions_spoken(versions_with(ca, pin_min=False), ca),
               message="for a server stuck on TLS 1.2 you found {TLSv1_2, TLSv1_3}",
               hint="set both minimum_version and maximum_version")
    says_wrong(lesson06.check_versions_spoken(versions_with(ca, trust=False), ca),
               message="no version worked", hint="`ca.cafile`")
    says_wrong(lesson06.check_versions_spoken(lambda address: ["1.2", "1.3"], ca),
               message="returned ['1.2', '1.3']", hint="a set of ssl.TLSVersion")
    says_wrong(lesson06.check_versions_spoken("versions_spoken", ca),
               message="give the function itself", hint="without parentheses")
    says_right(lesson06.check_versions_spoken(versions_with(ca), ca))
    says_right(lesson06.check_versions_spoken(versions_with(ca, as_strings=True), ca))


# -- 07 Serve many clients -------------------------------------------------------------------
async def one_line_each(listener, stop):
    async def handle(reader, writer):
        line = await reader.readline()            # no loop: the 2nd and 3rd lines go unanswered
        writer.write(line.upper())
        await writer.drain()
        writer.close()

    async with await asyncio.start_server(handle, sock=listener):
        await stop.wait()


async def returns_at_once(listener, stop):
    await asyncio.start_server(lambda r, w: None, sock=listener)   # and returns: no stop.wait()


async def blocking_inside_async(listener, stop):
    """The exercise's blocking server with `async` in front: it never lets the loop run."""
    while not stop.is_set():
        conn, _addr = listener.accept()
        with conn, conn.makefile("rwb") as f:
            for line in f:
                f.write(line.upper())
                f.flush()


@wrong_answer_to(lesson07.check_asyncio_upper)
def test_asyncio_upper_that_blocks_the_loop():
    says_wrong(lesson07.check_asyncio_upper(blocking_inside_async),
               message="a blocking call inside `async def`", hint="every wait is an `await`")


@wrong_answer_to(lesson07.check_asyncio_upper)
def test_asyncio_upper_that_answers_one_line_or_stops_at_once():
    says_wrong(lesson07.check_asyncio_upper(one_line_each), message="of 150 answers arrived",
               hint="answers every line until the client closes")
    says_wrong(lesson07.check_asyncio_upper(returns_at_once), message="returned at once",
               hint="wait for `stop`")
    called = one_line_each(None, None)                 # upper_server() instead of upper_server
    says_wrong(lesson07.check_asyncio_upper(called), message="not coroutine",
               hint="without parentheses")
    called.close()


async def shouts_back(reader, writer):
    while data := await reader.read(4096):
        await asyncio.sleep(0.01)
        writer.write(data.upper())
        await writer.drain()
    writer.close()


async def writes_str(reader, writer):
    data = await reader.read(4096)
    await asyncio.sleep(0.01)
    writer.write(data.decode())
    writer.close()


def plain_def(reader, writer):
    time.sleep(0.1)


@wrong_answer_to(lesson07.check_does_not_block)
def test_slow_echo_that_is_not_async_or_not_an_echo():
    says_wrong(lesson07.check_does_not_block(plain_def), message="is not `async def`",
               hint="async def slow_echo(reader, writer)")
    says_wrong(lesson07.check_does_not_block(shouts_back), message="not every client got its echo",
               hint="write back exactly what you read")
    says_wrong(lesson07.check_does_not_block(writes_str), message="raised TypeError",
               hint="await reader.read(...)")


# -- 08 Talk over WebSockets -----------------------------------------------------------------
def unmask(frame, *, mask_bit=True, extended=True, xor=True):
    """The exercise's solution; each keyword turns one part of it into a student's mistake."""
    length = frame[1] & 0x7F if mask_bit else frame[1]
    start = 2
    if extended and length == 126:
        length, start = int.from_bytes(frame[2:4], "big"), 4
    elif extended and length == 127:
        length, start = int.from_bytes(frame[2:10], "big"), 10
    mask = frame[start:start + 4]
    payload = frame[start + 4:start + 4 + length]
    return bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if xor else payload


@wrong_answer_to(lesson08.check_unmask)
def test_unmask_that_forgets_the_xor_or_the_longer_lengths():
    for wrong, message, hint in [
            (lambda f: unmask(f, xor=False), "for a 5-byte text frame",
             "XORed with the mask bytes taken in turn"),
            (lambda f: unmask(f, extended=False), "for a 300-byte frame",
             "126 in the low 7 bits of byte 2 (byte 2 & 0x7F: its top bit is the MASK flag) means"),
            (lambda f: unmask(f, mask_bit=False), "for a 300-byte frame", "byte 2 & 0x7F")]:
        says_wrong(lesson08.check_unmask(wrong), message=message, hint=hint)
    says_wrong(lesson08.check_unmask(b"\x81\x85"), message="give the function itself",
               hint="without parentheses")
    says_right(lesson08.check_unmask(unmask))


def named_chat(*, to_sender=False, forget=True, fan_out="broadcast"):
    """The exercise's handler (the notebook's solution by default); ``to_sender`` and
    ``forget=False`` make a student's mistakes.

    ``fan_out="await send"`` sends to each other client in turn: ``await send()`` raises
    for a vanished client still in the dict, where ``broadcast()`` skips it.
    """
    names = {}

    async def handler(websocket):
        name = await websocket.recv()
        await websocket.send(f"welcome {name}")
        names[websocket] = name
        try:
            async for text in websocket:
                others = [ws for ws in names if ws is not websocket or to_sender]
                if fan_out == "broadcast":
                    websockets.broadcast(others, f"{name}: {text}")  # skips closed connections
                else:
                    for other in others:
                        await other.send(f"{name}: {text}")  # raises for a vanished client
        finally:
            if forget:
                del names[websocket]
    return handler


@wrong_answer_to(lesson08.check_named_chat)
def test_named_chat_that_echoes_the_sender_or_keeps_vanished_clients():
    says_wrong(run(lesson08.check_named_chat(named_chat(to_sender=True))),
               message="she got her own message back", hint="to every other websocket")
    says_wrong(run(lesson08.check_named_chat(named_chat(forget=False, fan_out="await send"))),
               message="after cid vanished", hint="remove it from your dict in a `finally:`")
    says_right(run(lesson08.check_named_chat(named_chat())))
    # the check waits until the server saw cid go: forgetting it in `finally:` is enough,
    # every time, however the others are sent to
    says_right(run(lesson08.check_named_chat(named_chat(fan_out="await send"))))
