"""One error discipline (labkit.servers.arguments): every public constructor × bad arguments.

A wrong type raises TypeError, a right type with a wrong value ValueError, and every
message has one shape, "<what> must be <...>, not <what it was>", whichever server or
Capture it comes from.  Nothing starts before the arguments are checked: a refused
constructor leaves no thread, no socket and no bound port behind.
"""

import http.server
import math
import os
import re
import socket
import threading
from pathlib import Path

import pytest
import tornado.web
from handlers import serve_until_stopped, ws_echo

import labkit
from labkit import (
    BackgroundServer,
    Capture,
    DNSResolver,
    DNSServer,
    Dribbler,
    HTTPServer,
    HTTPSServer,
    LocalCA,
    SlowConsumer,
    SlowReader,
    TCPServer,
    TLSServer,
    TornadoServer,
    UDPRelay,
    UDPServer,
    WebSocketServer,
    WSGIServer,
    forget,
    load,
    percentile,
    serve_in_thread,
)
from labkit.servers import arguments

CA = None  # made once per module (a LocalCA costs a key pair)


def ca():
    global CA
    CA = CA or LocalCA()
    return CA


class TornadoHello(tornado.web.RequestHandler):
    def get(self):
        self.write("hi\n")


def wsgi_app(environ, start_response):
    start_response("200 OK", [])
    return [b""]


def sync_handler(ws):
    return None


# name -> (make(**overrides), the arguments it takes that COMMON lists)
CONSTRUCTORS = {
    "TCPServer": (lambda **kw: TCPServer(**kw), {"port", "host", "name", "backlog"}),
    "UDPServer": (lambda **kw: UDPServer(**kw), {"port", "host", "name"}),
    "TLSServer": (lambda **kw: TLSServer(kw.pop("ca", ca()), **kw),
                  {"port", "host", "name", "backlog"}),
    "HTTPServer": (lambda **kw: HTTPServer(**kw), {"port", "host", "name", "backlog"}),
    "HTTPSServer": (lambda **kw: HTTPSServer(kw.pop("ca", ca()), **kw),
                    {"port", "host", "name", "backlog"}),
    "WSGIServer": (lambda **kw: WSGIServer(kw.pop("app", wsgi_app), **kw),
                   {"port", "host", "name"}),
    "WebSocketServer": (lambda **kw: WebSocketServer(kw.pop("handler", ws_echo), **kw),
                        {"host", "name"}),
    "TornadoServer": (lambda **kw: TornadoServer(kw.pop("handlers", [("/", TornadoHello)]), **kw),
                      {"host", "name"}),
    "forget": (lambda **kw: forget(kw.pop("sock")), set()),
    "BackgroundServer": (lambda **kw: BackgroundServer(kw.pop("serve", serve_until_stopped),
                                                       **kw), {"port", "host", "name", "backlog"}),
    "DNSServer": (lambda **kw: DNSServer(kw.pop("records", {"a.test": "127.0.0.1"}), **kw),
                  {"port", "host", "name"}),
    "DNSResolver": (lambda **kw: DNSResolver(kw.pop("roots", ["127.0.0.2"]), **kw),
                    {"port", "host", "name"}),
    "UDPRelay": (lambda **kw: UDPRelay(kw.pop("target", ("127.0.0.1", 9)), **kw),
                 {"port", "name"}),
    "serve_in_thread": (lambda **kw: serve_in_thread(kw["server"]), set()),
    "LocalCA": (lambda **kw: LocalCA(**kw), {"name"}),
    "SlowReader": (lambda **kw: SlowReader(kw.pop("target", ("127.0.0.1", 9)), **kw), set()),
    "Dribbler": (lambda **kw: Dribbler(kw.pop("data", b"hi"), **kw), set()),
    "SlowConsumer": (lambda **kw: SlowConsumer(**kw), set()),
    "Capture": (lambda **kw: Capture(*kw.pop("targets", (8080,)), **kw), set()),
    "load": (lambda **kw: load(kw.pop("target", ("127.0.0.1", 9)), **kw), set()),
    "percentile": (lambda **kw: percentile(kw.pop("values", [1, 2]), kw.pop("q", 50)), set()),
}

# argument -> [(bad value, the error it must raise)], for every constructor that takes it
COMMON = {
    "port": [(True, TypeError), (1.5, TypeError), ("8080", TypeError), (None, TypeError),
             (-1, ValueError), (70000, ValueError)],
    "host": [(2130706433, TypeError), (b"127.0.0.1", TypeError), (None, TypeError),
             ("0.0.0.0", ValueError), ("localhost", ValueError), ("8.8.8.8", ValueError),
             ("", ValueError)],
    "name": [(5, TypeError), (None, TypeError), ("", ValueError), ("a\nb", ValueError),
             ("x" * 65, ValueError)],
    "backlog": [(True, TypeError), (1.5, TypeError), ("16", TypeError), (0, ValueError),
                (-5, ValueError)],
}

# constructor -> [(argument, bad value, error, what the message names)]
SPECIFIC = {
    "TCPServer": [("handler", 42, TypeError, "handler"), ("handler", None, TypeError, "handler"),
                  ("handler", "shout", ValueError, "handler")],
    "UDPServer": [("handler", 42, TypeError, "handler"), ("handler", "shout", ValueError,
                                                           "handler")],
    "TLSServer": [("ca", "ca.pem", TypeError, "ca"), ("ca", None, ValueError, "ca"),
                  ("context", "x", TypeError, "context"), ("handler", 42, TypeError, "handler")],
    "HTTPServer": [("static", 5, TypeError, "static"), ("static", "", ValueError, "static"),
                   ("static", "/no/such/folder", ValueError, "static"),
                   ("static", str(Path.home()), ValueError, "static"),
                   ("static", "/", ValueError, "static"),
                   ("ssl_context", "x", TypeError, "ssl_context"),
                   ("ssl_context", True, TypeError, "ssl_context")],
    "HTTPSServer": [("ca", 5, TypeError, "ca"), ("ca", None, ValueError, "ca"),
                    ("context", object(), TypeError, "context")],
    "WSGIServer": [("app", 5, TypeError, "app"), ("app", None, TypeError, "app")],
    "WebSocketServer": [
        ("handler", 5, TypeError, "handler"), ("handler", sync_handler, TypeError, "handler"),
        ("max_size", "x", TypeError, "max_size"), ("max_size", True, TypeError, "max_size"),
        ("max_size", 0, ValueError, "max_size"), ("max_size", (1, "x"), TypeError, "max_size"),
        ("max_queue", -1, ValueError, "max_queue"), ("write_limit", None, TypeError,
                                                     "write_limit"),
        ("ping_interval", "20", TypeError, "ping_interval"),
        ("ping_interval", 0, ValueError, "ping_interval"),
        ("ping_timeout", -1, ValueError, "ping_timeout"),
        ("close_timeout", math.nan, ValueError, "close_timeout"),
        ("open_timeout", 1e9, ValueError, "open_timeout"),
        ("compression", "gzip", ValueError, "compression"),
        ("compression", 1, TypeError, "compression"),
        ("subprotocols", "chat", TypeError, "subprotocols"),
        ("subprotocols", [1], TypeError, "each of subprotocols"),
        ("origins", "http://x", TypeError, "origins"),
        ("process_request", 5, TypeError, "process_request"),
        ("server_header", 5, TypeError, "server_header"),
        ("logger", 5, TypeError, "logger"),
        ("ssl", "x", TypeError, "ssl"),
        ("port", 8080, TypeError, "port"), ("sock", None, TypeError, "sock"),
        ("bogus", 1, TypeError, "each option"),
    ],
    "TornadoServer": [("handlers", TornadoHello, TypeError, "handlers"),
                      ("handlers", [TornadoHello], TypeError, "handlers"),
                      ("port", 8080, TypeError, "port"), ("sock", None, TypeError, "sock")],
    "forget": [("sock", "127.0.0.1:80", TypeError, "sock"),
               ("sock", socket.socket(socket.AF_INET, socket.SOCK_DGRAM), TypeError, "sock")],
    "BackgroundServer": [("serve", 5, TypeError, "serve"), ("backlog", 5000, ValueError,
                                                             "backlog")],
    "DNSServer": [("records", ["a.test"], TypeError, "records"),
                  ("records", {}, ValueError, "records"),
                  ("records", {5: "127.0.0.1"}, TypeError, "a record's name"),
                  ("records", {"": "127.0.0.1"}, ValueError, "a record's name"),
                  ("records", {"a.test": "nope"}, ValueError, "the address of 'a.test'"),
                  ("records", {"a.test": [None]}, ValueError, "the address of 'a.test'"),
                  ("ttl", -1, ValueError, "ttl"), ("ttl", "300", TypeError, "ttl"),
                  ("ttl", True, TypeError, "ttl"), ("ttl", 2**31, ValueError, "ttl"),
                  ("zone", 5, TypeError, "zone"), ("zone", "a..test", ValueError, "zone"),
                  ("negative_ttl", -1, ValueError, "negative_ttl"),
                  ("negative_ttl", 1.5, TypeError, "negative_ttl"),
                  ("delegate", ["b.test"], TypeError, "delegate")],
    "DNSResolver": [("roots", "127.0.0.2", TypeError, "roots"), ("roots", [], ValueError, "roots"),
                    ("roots", ["a.root.test"], ValueError, "a root server's address"),
                    ("timeout", 0, ValueError, "timeout"), ("timeout", "1", TypeError, "timeout"),
                    ("timeout", True, TypeError, "timeout")],
    "UDPRelay": [("target", "127.0.0.1:9", TypeError, "target"),
                 ("target", ("127.0.0.1", True), TypeError, "target port"),
                 ("target", ("127.0.0.1", 0), ValueError, "target port"),
                 ("target", ("0.0.0.0", 9), ValueError, "target host"),
                 ("target", (2130706433, 9), TypeError, "target host"),
                 ("target", UDPServer(), ValueError, "target"),   # not running
                 ("drop", 1.5, ValueError, "drop"), ("drop", "0.1", TypeError, "drop"),
                 ("drop", True, TypeError, "drop"), ("drop", -0.1, ValueError, "drop"),
                 ("duplicate", math.nan, ValueError, "duplicate"),
                 ("reorder", None, TypeError, "reorder"),
                 ("seed", 1.5, TypeError, "seed"), ("seed", "1", TypeError, "seed"),
                 ("hold", 0, ValueError, "hold"), ("hold", 3, ValueError, "hold"),
                 ("hold", "x", TypeError, "hold")],
    "LocalCA": [("name", "x" * 65, ValueError, "name")],
    "SlowReader": [("target", "x", TypeError, "target"),
                   ("target", ("127.0.0.1", 0), ValueError, "port"),
                   ("max_bytes", 0, ValueError, "max_bytes"),
                   ("max_bytes", "1", TypeError, "max_bytes"),
                   ("quiet", 0, ValueError, "quiet"), ("quiet", None, TypeError, "quiet"),
                   ("quiet", True, TypeError, "quiet")],
    "Dribbler": [("data", "text", TypeError, "data"), ("data", [b"a", "b"], TypeError, "data"),
                 ("piece", 0, ValueError, "piece"), ("piece", 1.5, TypeError, "piece"),
                 ("pause", -1, ValueError, "pause"), ("pause", "0.1", TypeError, "pause"),
                 ("then", "later", ValueError, "then"), ("then", 1, TypeError, "then")],
    "SlowConsumer": [("chunk", 0, ValueError, "chunk"), ("chunk", "1", TypeError, "chunk"),
                     ("pause", 5, ValueError, "pause"), ("pause", None, TypeError, "pause")],
    "Capture": [("targets", ("x",), TypeError, "each target"),
                ("targets", (True,), TypeError, "port"), ("targets", (0,), ValueError, "port"),
                ("targets", (70000,), ValueError, "port"),
                ("targets", ({"80": "web"},), TypeError, "port"),
                ("targets", (), ValueError, "targets"),
                ("targets", (TCPServer(),), ValueError, "each target"),   # not running
                ("name", 5, TypeError, "name"), ("name", "../x", ValueError, "name"),
                ("name", "", ValueError, "name"), ("iface", 5, TypeError, "iface"),
                ("keylog", 5, TypeError, "keylog"), ("keylog", "", ValueError, "keylog"),
                ("protocol", "icmp", ValueError, "protocol"),
                ("protocol", 6, TypeError, "protocol")],
    "load": [("target", "x", TypeError, "target"),
             ("target", ("127.0.0.1", True), TypeError, "port"),
             ("target", ("0.0.0.0", 80), ValueError, "host"),
             ("clients", 0, ValueError, "clients"), ("clients", 1.5, TypeError, "clients"),
             ("clients", True, TypeError, "clients"), ("requests", 10**6, ValueError,
                                                       "requests"),
             ("message", "ping", TypeError, "message"), ("message", b"", ValueError, "message"),
             ("expect", 5, TypeError, "expect"), ("hold_open", 1, TypeError, "hold_open"),
             ("timeout", 0, ValueError, "timeout"), ("timeout", "1", TypeError, "timeout")],
    "percentile": [("q", 101, ValueError, "q"), ("q", "50", TypeError, "q"),
                   ("q", True, TypeError, "q"), ("values", [], ValueError, "values")],
}


def _cases():
    for kind, (_make, takes) in CONSTRUCTORS.items():
        for argument in sorted(takes):
            for value, error in COMMON[argument]:
                yield kind, argument, value, error, argument
        for argument, value, error, what in SPECIFIC.get(kind, []):
            yield kind, argument, value, error, what


CASES = list(_cases())
SHAPE = re.compile(r"(?P<what>.+?) must be (?P<must>.+), not (?P<was>.+)", re.S)


def test_the_table_covers_every_public_constructor():
    public = {name for name in labkit.__all__
              if getattr(labkit, name).__module__.startswith("labkit.servers.")}
    public.add("Capture")
    # classes with no arguments to get wrong, and the error type itself
    nothing_to_check = {"ByteCounter", "FramedEcho", "AckReceiver", "ServerError", "LoadResult"}
    assert public - nothing_to_check == set(CONSTRUCTORS)
    assert len(CASES) >= 200, len(CASES)   # (issue 24 asks for the table's size: see the report)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _shown(value) -> str:
    """A test id that is the same in every process (xdist compares them): no addresses."""
    text = repr(value)
    return type(value).__name__ if " at 0x" in text else text[:30]


@pytest.mark.parametrize("kind, argument, value, error, what", CASES,
                         ids=[f"{k}-{a}={_shown(v)}" for k, a, v, _e, _w in CASES])
def test_a_bad_argument_is_refused_in_one_shape_before_anything_starts(
        kind, argument, value, error, what):
    make, _takes = CONSTRUCTORS[kind]
    ca()   # (made before counting: its temp dir is not a leak)
    threads, fds = threading.active_count(), open_fds()
    with pytest.raises((TypeError, ValueError)) as info:
        make(**{argument: value})
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    message = str(info.value)
    shape = SHAPE.fullmatch(message)
    assert shape, f"not '<what> must be <...>, not <value>': {message}"
    assert shape["what"] == what, message
    assert threading.active_count() == threads and open_fds() <= fds, "something started"


def test_serve_in_thread_refuses_a_server_on_every_address_and_leaves_nothing_bound():
    server = http.server.HTTPServer(("0.0.0.0", 0), http.server.BaseHTTPRequestHandler)
    port = server.server_address[1]
    with pytest.raises(ValueError, match=r"^host must be a loopback address .*not '0.0.0.0'.*"
                                         r"serve_in_thread closed this server"):
        serve_in_thread(server)
    assert server.socket.fileno() == -1
    with socket.socket() as probe:   # the port is free again: nothing listens there
        assert probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("value, error", [(5, TypeError), ("x", TypeError)])
def test_serve_in_thread_takes_only_socketserver_servers(value, error):
    with pytest.raises(error, match=r"^server must be a socketserver server"):
        serve_in_thread(value)


def test_the_sum_of_a_relays_probabilities_is_checked_too():
    with pytest.raises(ValueError, match=r"^drop \+ duplicate \+ reorder must be at most 1, "
                                         r"not 1\.2: lower one of them$"):
        UDPRelay(("127.0.0.1", 9), drop=0.5, duplicate=0.4, reorder=0.3)


def test_a_load_is_bounded_in_clients_times_requests():
    with pytest.raises(ValueError, match=r"^clients \* requests must be at most 200,000 per "
                                         r"run, not 1000000: use fewer requests per client$"):
        load(("127.0.0.1", 9), clients=1000, requests=1000)


def test_the_same_mistake_reads_the_same_from_a_server_and_a_capture():
    errors = []
    for make in (lambda: TCPServer(port=True), lambda: UDPServer(port=True),
                 lambda: Capture(True), lambda: labkit.tcp_states(True)):
        with pytest.raises(TypeError) as info:
            make()
        errors.append(str(info.value).split(" (e.g.")[0])
    assert errors == ["port must be an int from 0 to 65535"] * 2 + \
        ["port must be an int from 1 to 65535"] * 2
    for make in (lambda: TCPServer(name=5), lambda: Capture(5000, name=5)):
        with pytest.raises(TypeError, match=r"^name must be .*, not 5$"):
            make()


@pytest.mark.parametrize("check, args, error", [
    (arguments.integer, (True, "n", 1, 5), TypeError),
    (arguments.integer, (6, "n", 1, 5), ValueError),
    (arguments.number, (math.inf, "t", 0, 5), ValueError),
    (arguments.number, (0, "t", 0, 5), None),
    (arguments.one_of, (None, "p", [None, "tcp"]), None),
    (arguments.one_of, ("TCP", "p", [None, "tcp"]), ValueError),
    (arguments.flag, (0, "f"), TypeError),
    (arguments.recording_name, (None,), None),
    (arguments.recording_name, ("a..b",), ValueError),
    (arguments.host, ("::1",), None),
])
def test_the_checks_themselves(check, args, error):
    if error is None:
        check(*args)
    else:
        with pytest.raises(error):
            check(*args)
