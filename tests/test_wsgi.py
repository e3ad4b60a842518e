"""labkit.servers.wsgi: serve_in_thread (socketserver/http.server) and WSGIServer (wsgiref,
Flask)."""

import http.server
import socket
import threading
import urllib.error
import urllib.request

import pytest
from handlers import OutOfThreads
from test_http import exchange

import labkit.servers.base
from labkit import ServerError, WSGIServer, serve_in_thread


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/boom":
            raise RuntimeError("handler bug")
        body = b"hi\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


def test_serve_in_thread_runs_http_server():
    with serve_in_thread(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)) as srv:
        url = f"http://127.0.0.1:{srv.server_address[1]}/"
        assert urllib.request.urlopen(url, timeout=5).read() == b"hi\n"


def test_serve_in_thread_reports_handler_errors():
    with pytest.raises(ServerError, match="handler bug"):
        with serve_in_thread(http.server.HTTPServer(("127.0.0.1", 0), Hello)) as srv:
            with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
                conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=5)
                conn.request("GET", "/boom")
                conn.getresponse()
    with pytest.raises(TypeError, match="socketserver"):
        serve_in_thread("server")


def wsgi_app(environ, start_response):
    if environ["PATH_INFO"] == "/boom":
        raise KeyError("missing")
    body = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def test_exit_closes_every_connection_and_joins_its_thread():
    """20 idle clients used to keep 20 handler threads after the block, still answering."""
    threads = threading.active_count()
    with WSGIServer(wsgi_app) as server:
        clients = [socket.create_connection(server.address, timeout=5) for _ in range(20)]
        assert urllib.request.urlopen(server.url + "/x", timeout=5).status == 200
    assert threading.active_count() <= threads          # joined: nothing left running
    try:
        clients[0].sendall(b"GET /late HTTP/1.0\r\n\r\n")
        late = clients[0].recv(100)
    except OSError:
        late = b""
    assert late == b"", "a request sent after the block must not be answered"
    for c in clients:
        c.close()


def test_an_app_error_while_stopping_is_still_reported():
    started, release = threading.Event(), threading.Event()

    def slow_then_broken(environ, start_response):
        started.set()
        release.wait(5)
        raise KeyError("failed while the server stopped")

    def stop_soon():
        assert started.wait(5)
        release.set()

    with pytest.raises(ServerError, match="failed while the server stopped"):
        with WSGIServer(slow_then_broken) as server:
            client = socket.create_connection(server.address, timeout=5)
            client.sendall(b"GET / HTTP/1.0\r\n\r\n")
            stopper = threading.Thread(target=stop_soon)
            stopper.start()
            assert started.wait(5)
    stopper.join(5)
    client.close()


def test_the_log_is_bounded_and_each_line_short(monkeypatch, caplog):
    from labkit.servers import wsgi

    monkeypatch.setattr(wsgi, "LOG_LIMIT", 3)
    long = "/" + "a" * 5000
    with WSGIServer(wsgi_app) as server:
        for _ in range(5):
            urllib.request.urlopen(server.url + long, timeout=5).read()
    assert len(server.log) == 3 and server.log.dropped == 2
    assert all(len(line) <= 201 for line in server.log), "a 5 KB URL is not a log line"
    assert "WSGIServer 'server': .log keeps its first 3 entries" in caplog.text


def test_out_of_threads_a_connection_waits_for_one_instead_of_being_dropped(monkeypatch):
    short = OutOfThreads(monkeypatch, "-request")
    with pytest.raises(ServerError, match="can't start new thread"):
        with WSGIServer(wsgi_app) as server:
            client = socket.create_connection(server.address, timeout=5)
            client.sendall(b"GET /waited HTTP/1.0\r\n\r\n")
            assert short.retried.wait(5)  # it tried, and tried again
            short.end()                   # threads are free again: served
            assert client.recv(100).startswith(b"HTTP/1.0 200 OK")
            client.close()


def test_wsgi_server_serves_a_function():
    with WSGIServer(wsgi_app) as srv:
        assert urllib.request.urlopen(srv.url + "/x", timeout=5).read() == b"GET /x\n"
        # http.server answers a broken request line HTML-only (HTTP/0.9 style): look for 400
        assert b"400" in exchange(srv.address, b"GET / HTTP/1.1 extra\r\n\r\n")
        assert urllib.request.urlopen(srv.url + "/y", timeout=5).read() == b"GET /y\n"
    assert any("/x" in line for line in srv.log)


def test_wsgi_app_errors_are_500_and_raised_on_exit(capfd):
    with pytest.raises(ServerError, match="KeyError"):
        with WSGIServer(wsgi_app) as srv:
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(srv.url + "/boom", timeout=5)
            assert info.value.code == 500
    assert "Traceback" not in capfd.readouterr().err


def test_wsgi_server_serves_flask():
    flask = pytest.importorskip("flask")
    app = flask.Flask("t")

    @app.get("/hi/<name>")
    def hi(name):
        return f"hi {name}\n"

    @app.get("/boom")
    def boom():
        raise ValueError("flask bug")

    with pytest.raises(ServerError, match="flask bug"):
        with WSGIServer(app) as srv:
            assert urllib.request.urlopen(srv.url + "/hi/ada", timeout=5).read() == b"hi ada\n"
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(srv.url + "/boom", timeout=5)


# -- misuse: a clear error, never a hang -------------------------------------------
def test_serve_in_thread_exit_without_enter_or_twice():
    runner = serve_in_thread(http.server.HTTPServer(("127.0.0.1", 0), Hello))
    assert runner.__exit__(None, None, None) is False  # never started: nothing to stop
    with runner:
        pass
    assert runner.__exit__(None, None, None) is False  # a second exit: already stopped
    with pytest.raises(RuntimeError, match=r"create a new serve_in_thread\(\.\.\.\)"):
        runner.__enter__()


def test_serve_in_thread_nested_enter_is_refused():
    runner = serve_in_thread(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello))
    with runner as srv:
        with pytest.raises(RuntimeError, match="already started"):
            runner.__enter__()
        url = f"http://127.0.0.1:{srv.server_address[1]}/"
        assert urllib.request.urlopen(url, timeout=5).read() == b"hi\n"


def test_serve_in_thread_exit_is_bounded_when_a_handler_is_stuck(monkeypatch):
    """A single-threaded server busy with a half-sent request cannot stop: say so, in time."""
    monkeypatch.setattr(labkit.servers.base, "JOIN_TIMEOUT", 0.3)
    handling = threading.Event()

    class Stuck(Hello):
        def handle(self):
            handling.set()
            super().handle()  # waits for the rest of the request head

    runner = serve_in_thread(http.server.HTTPServer(("127.0.0.1", 0), Stuck))
    server = runner.__enter__()
    client = socket.create_connection(server.server_address, timeout=5)
    client.sendall(b"GET / HTTP/1.1\r\n")
    try:
        assert handling.wait(5)
        with pytest.raises(RuntimeError, match=r"did not stop within 0\.3 s"):
            runner.__exit__(None, None, None)
    finally:
        client.close()  # the handler sees EOF, serve_forever sees the shutdown request
        runner._thread.join(5)
    assert not runner._thread.is_alive()


def test_wsgi_server_exit_without_enter_and_reentry():
    server = WSGIServer(wsgi_app)
    assert server.__exit__(None, None, None) is False  # never started: nothing to stop
    with server:
        with pytest.raises(RuntimeError, match="already started"):
            server.__enter__()
        assert urllib.request.urlopen(server.url + "/x", timeout=5).read() == b"GET /x\n"
    assert server.__exit__(None, None, None) is False
    with pytest.raises(RuntimeError, match="new WSGIServer"):
        server.__enter__()
