"""forget(): the kernel drops a connection without a packet; the peer learns of it by a RST."""

import os
import socket

import pytest

from labkit import Capture, forget


@pytest.mark.skipif(os.geteuid() != 0, reason="TCP_REPAIR needs CAP_NET_ADMIN (root, or the "
                    "lab kernel's namespace)")
def test_a_forgotten_connection_sends_nothing_and_answers_with_a_reset(live):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with Capture(port) as wire:
            client = socket.create_connection(("127.0.0.1", port), timeout=5)
            served, _ = listener.accept()
            forget(served)
            client.sendall(b"still there?")
            with pytest.raises(ConnectionResetError):
                client.recv(10)
            client.close()
    from_server = [s.flags for s in wire.segments if s.src == "server"]
    assert from_server == ["SYN-ACK", "RST"], from_server   # no FIN, no RST until asked


def test_forget_takes_a_tcp_socket_only():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        with pytest.raises(TypeError, match="sock must be a connected TCP socket"):
            forget(udp)
    with pytest.raises(TypeError, match="sock must be a connected TCP socket"):
        forget("127.0.0.1:80")
