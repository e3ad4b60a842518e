"""labkit.servers.load: BackgroundServer, load(), percentile(), SlowReader, plot_load()."""

import asyncio
import socket
import threading
import time

import pytest

from labkit import (
    BackgroundServer,
    LoadResult,
    ServerError,
    SlowReader,
    load,
    percentile,
    plot_load,
)


def handle(conn):
    with conn:
        try:
            while data := conn.recv(4096):
                conn.sendall(data)
        except ConnectionError:
            pass


def iterative(listener, stop):
    while not stop.is_set():
        conn, _ = listener.accept()
        handle(conn)


def threaded(listener, stop):
    while not stop.is_set():
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


async def asyncio_echo(listener, stop):
    async def client(reader, writer):
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(client, sock=listener)
    async with server:
        await stop.wait()


# -- percentile -----------------------------------------------------------------------------------
def test_percentile_matches_linear_interpolation():
    values = [4, 1, 3, 2, 5]                    # sorted: 1 2 3 4 5
    assert percentile(values, 0) == 1
    assert percentile(values, 50) == 3
    assert percentile(values, 100) == 5
    assert percentile(values, 25) == 2
    assert percentile([10, 20], 50) == 15       # between two ranks
    assert percentile(range(1, 101), 99) == pytest.approx(99.01)
    assert percentile([7], 99) == 7


def test_load_targets_loopback_only():
    with pytest.raises(ValueError, match="loopback"):
        load(("192.0.2.1", 80))
    with pytest.raises(ValueError, match="loopback"):
        load(("example.com", 80))
    with pytest.raises(TypeError, match=r"\(host, port\)"):
        load("127.0.0.1:80")


# -- load against real servers --------------------------------------------------------------------
@pytest.mark.parametrize("serve", [iterative, threaded, asyncio_echo])
def test_load_measures_every_design(serve):
    with BackgroundServer(serve) as server:
        result = load(server, clients=4, requests=25)
    assert result.ok, result
    assert result.completed == 100 and len(result.latencies) == 100
    assert result.rps > 0 and 0 < result.p50_ms <= result.p99_ms
    assert "4 clients × 25 requests: 100/100 answered" in str(result)


def test_load_reports_wrong_answers():
    def upper(listener, stop):
        while not stop.is_set():
            conn, _ = listener.accept()
            with conn:
                while data := conn.recv(4096):
                    conn.sendall(data.upper())

    with BackgroundServer(upper) as server:
        wrong = load(server, clients=2, requests=3, message=b"hi\n")
        right = load(server, clients=2, requests=3, message=b"hi\n", expect=b"HI\n")
    assert not wrong.ok and wrong.completed == 0 and wrong.errors == {"wrong answer": 2}
    assert right.ok


def test_load_stops_by_itself_at_the_time_limit():
    # The iterative server is stuck on the first client, which holds its connection
    # until every client is done: the run must give up at the limit, not hang.
    with BackgroundServer(iterative) as server:
        started = time.monotonic()
        result = load(server, clients=5, requests=2, hold_open=True, timeout=0.5)
        took = time.monotonic() - started
    assert result.timed_out and not result.ok
    assert result.completed == 2          # only the first client was served
    assert took < 10


def test_hold_open_passes_a_concurrent_server():
    with BackgroundServer(threaded) as server:
        assert load(server, clients=20, requests=2, hold_open=True, timeout=5).ok


def test_load_counts_refused_connections():
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    result = load(("127.0.0.1", port), clients=3, requests=1, timeout=5)
    assert result.errors == {"ConnectionRefusedError": 3} and result.completed == 0
    assert not result.timed_out


# -- BackgroundServer -----------------------------------------------------------------------------
def test_background_server_stops_a_blocking_accept():
    with BackgroundServer(iterative) as server:
        assert server.port > 0
    assert "stopped" in repr(server)


def test_background_server_survives_garbage_and_keeps_serving():
    with BackgroundServer(threaded) as server:
        with socket.create_connection(server.address) as s:
            s.sendall(bytes(range(256)) * 10)
            s.shutdown(socket.SHUT_WR)
            got = b""
            while chunk := s.recv(65536):
                got += chunk
        assert got == bytes(range(256)) * 10
        with socket.create_connection(server.address) as s:   # a reset, then more clients
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        assert load(server, clients=3, requests=3).ok


def test_background_server_reports_errors():
    def broken(listener, stop):
        raise KeyError("oops")

    with pytest.raises(ServerError, match="KeyError"):
        with BackgroundServer(broken):
            pass


def test_background_server_rejects_bad_arguments():
    with pytest.raises(TypeError, match=r"serve\(listener, stop\)"):
        BackgroundServer("echo")
    with pytest.raises(ValueError, match="backlog"):
        BackgroundServer(iterative, backlog=0)


def test_background_server_names_a_serve_that_ignores_stop(monkeypatch):
    import labkit.servers.base as mod

    monkeypatch.setattr(mod, "JOIN_TIMEOUT", 0.3)
    release = threading.Event()

    def stubborn(listener, stop):
        release.wait(5)

    with pytest.raises(RuntimeError, match=r"stop\.is_set\(\)"):
        with BackgroundServer(stubborn):
            pass
    release.set()


# -- a slow reader --------------------------------------------------------------------------------
def test_slow_reader_fills_a_threaded_server_but_not_the_others():
    with BackgroundServer(threaded) as server:
        with SlowReader(server) as slow:
            assert slow.stuck and slow.bytes_sent > 0
            assert load(server, clients=3, requests=5, timeout=5).ok


# -- plot -----------------------------------------------------------------------------------------
def test_plot_load_draws_both_panels():
    run = LoadResult(1, 2, 2, 0.01, [0.001, 0.002])
    fig = plot_load({"a": {1: run, 4: run}}, title="t")
    assert len(fig.axes) == 2
    assert fig.axes[0].get_ylabel().startswith("throughput")
    with pytest.raises(ValueError, match="needs results"):
        plot_load({}, title="t")


# -- the lesson 07 checks drive load() -------------------------------------------------------
def test_lesson07_checks_say_right_and_wrong():
    from labkit.checks.lesson07 import check_asyncio_upper, check_does_not_block

    async def upper(listener, stop):
        async def one(reader, writer):
            while line := await reader.readline():
                writer.write(line.upper())
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(one, sock=listener)
        async with server:
            await stop.wait()

    assert check_asyncio_upper(upper).passed
    plain = check_asyncio_upper(iterative)
    assert not plain.passed and "plain `def`" in plain.message and "start_server" in plain.hint
    echoed = check_asyncio_upper(asyncio_echo)
    assert not echoed.passed and "upper case" in echoed.message

    async def blocking(reader, writer):
        while data := await reader.read(4096):
            time.sleep(0.1)
            writer.write(data)
            await writer.drain()
        writer.close()

    async def awaiting(reader, writer):
        while data := await reader.read(4096):
            await asyncio.sleep(0.1)
            writer.write(data)
            await writer.drain()
        writer.close()

    blocked = check_does_not_block(blocking)
    assert not blocked.passed and "asyncio.sleep" in blocked.hint
    assert check_does_not_block(awaiting).passed


def test_the_client_program_imports_only_the_standard_library():
    """load() runs it with `python -I -S`: it must start without labkit or site-packages."""
    import ast
    import sys
    from pathlib import Path

    import labkit.servers.loadclient as client

    tree = ast.parse(Path(client.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.level == 0}
    assert imported and imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
