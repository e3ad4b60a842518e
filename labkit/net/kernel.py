"""The ``Python 3 (netlab)`` kernel: every notebook in its own private network.

    $ python -m labkit kernel install        # done by `make`; then:
    $ jupyter kernelspec list                # ... netlab  .venv/share/jupyter/kernels/netlab

Its kernelspec starts ipykernel through :mod:`labkit.net.namespace`, so the kernel runs in
a user + network namespace of its own: live capture without root, private ports.

A kernel in another network namespace cannot be reached over TCP on the host's loopback,
so the kernelspec names :class:`LabKernelProvisioner` (jupyter_client's documented
extension point, registered under the ``jupyter_client.kernel_provisioners`` entry point).
Before launch it switches the kernel's ZMQ channels to the ``ipc`` transport — unix
sockets, which cross network namespaces — in a fresh private (0700) directory, which
:mod:`labkit.net.kernel_dir` removes when the kernel is gone, however it ends. JupyterLab,
nbclient, nbval and ``jupyter execute`` all start kernels through a provisioner, so all of
them get the lab kernel unchanged.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from jupyter_client.provisioning import LocalProvisioner

from labkit.net import kernel_dir

KERNEL_NAME = "netlab"
DISPLAY_NAME = "Python 3 (netlab)"
PROVISIONER_NAME = "netlab-provisioner"


def kernel_spec(python: str = sys.executable) -> dict:
    """The kernel.json of the lab kernel for interpreter ``python``."""
    return {
        "argv": [python, "-m", "labkit.net.namespace", "--",
                 python, "-Xfrozen_modules=off", "-m", "ipykernel_launcher",
                 "-f", "{connection_file}"],
        "display_name": DISPLAY_NAME,
        "language": "python",
        "interrupt_mode": "signal",
        "metadata": {"debugger": True,
                     "kernel_provisioner": {"provisioner_name": PROVISIONER_NAME}},
    }


def install(prefix: str = sys.prefix) -> Path:
    """Install the kernelspec under ``prefix`` (the venv); returns its directory.

    Readable by every user (directories 0755, files 0644) whoever installs it: on a hub,
    root installs it once for all the students.
    """
    from jupyter_client.kernelspec import KernelSpecManager

    umask = os.umask(0o022)  # for the directories it makes on the way (share/jupyter ...)
    try:
        with tempfile.TemporaryDirectory() as source:
            # install_kernel_spec copies the source's modes, and a TemporaryDirectory is 0700
            Path(source).chmod(0o755)
            spec = Path(source) / "kernel.json"
            spec.write_text(json.dumps(kernel_spec(), indent=1))
            spec.chmod(0o644)
            where = KernelSpecManager().install_kernel_spec(source, KERNEL_NAME, prefix=prefix)
    finally:
        os.umask(umask)
    return Path(where)


class LabKernelProvisioner(LocalProvisioner):
    """A LocalProvisioner whose kernel talks over unix sockets in a private directory."""

    held: int | None = None  # our hold on that directory (kernel_dir): launch to shutdown

    async def pre_launch(self, **kwargs):
        km = self.parent
        assert km is not None  # jupyter_client makes the kernel manager our parent
        # A restart keeps the provisioner and the connection info, so it keeps the directory.
        if self.held is None:
            runtime, self.held = kernel_dir.make()
            km.transport = "ipc"
            km.ip = str(runtime / "kernel")  # channels become kernel-1, kernel-2, ...
        return await super().pre_launch(**kwargs)

    async def cleanup(self, restart: bool = False) -> None:
        await super().cleanup(restart=restart)
        if not restart and self.held is not None and self.parent is not None:
            kernel_dir.release(Path(self.parent.ip).parent, self.held)
            self.held = None
