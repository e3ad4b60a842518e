import nbformat
from conftest import needs_capture

from labkit.tools.record import record

CELL = '''import socket
from labkit import Capture, TCPServer
with TCPServer("echo") as server, Capture(server, name="t-rec") as wire:
    with socket.create_connection(server.address) as s:
        s.sendall(b"hi"); s.recv(10)
print([s.flags for s in wire.segments[:3]])'''


@needs_capture
def test_record_saves_recordings_and_outputs_of_the_same_run(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_DATA", str(tmp_path / "data"))  # inherited by the kernel
    path = tmp_path / "99-Test.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CELL)])
    nbformat.write(nb, path)
    assert record([str(path)]) == 0
    saved = nbformat.read(path, as_version=4).cells[0]
    text = "".join(o.get("text", "") for o in saved.outputs)
    assert "['SYN', 'SYN-ACK', 'ACK']" in text and saved.execution_count == 1
    assert (tmp_path / "data" / "t-rec.pcapng").stat().st_size > 0
    assert (tmp_path / "data" / "t-rec.json").exists()


def test_record_names_a_missing_notebook(tmp_path):
    import pytest

    with pytest.raises(SystemExit, match="no such notebook"):
        record([str(tmp_path / "nope.ipynb")])


def test_the_mode_goes_to_the_kernel_and_this_process_keeps_its_own(tmp_path, monkeypatch):
    import os
    from types import MappingProxyType

    from labkit.tools.record import execute

    monkeypatch.setenv("LABKIT_CAPTURE", "replay")
    path = tmp_path / "99-Mode.ipynb"
    cell = nbformat.v4.new_code_cell("import os; print(os.environ['LABKIT_CAPTURE'])")
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), path)
    with monkeypatch.context() as patch:  # read-only while the notebook runs: a write raises
        patch.setattr(os, "environ", MappingProxyType(dict(os.environ)))
        execute(path, mode="record")
    [out] = nbformat.read(path, as_version=4).cells[0].outputs
    assert out.text == "record\n" and os.environ["LABKIT_CAPTURE"] == "replay"
