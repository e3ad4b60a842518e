"""The ``Python 3 (netlab)`` kernel: every notebook in its own private network.

    $ python -m labkit kernel install        # done by `make`; then:
    $ jupyter kernelspec list                # ... netlab  .venv/share/jupyter/kernels/netlab

Its kernelspec starts ipykernel through :mod:`labkit.net.namespace`, so the kernel runs in
a user + network namespace of its own: live capture without root, private ports.

A kernel in another network namespace cannot be reached over TCP on the host's loopback,
so the kernelspec names :class:`LabKernelProvisioner` (jupyter_client's documented
extension point, registered under the ``jupyter_client.kernel_provisioners`` entry point).
Before launch it switches the kernel's ZMQ channels to the ``ipc`` transport — unix
sockets, which cross network namespaces — in a fresh private (0700) directory, and after
shutdown it removes that directory. JupyterLab, nbclient, nbval and ``jupyter execute``
all start kernels through a provisioner, so all of them get the lab kernel unchanged.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

from jupyter_client.provisioning import LocalProvisioner

KERNEL_NAME = "netlab"
DISPLAY_NAME = "Python 3 (netlab)"
PROVISIONER_NAME = "netlab-provisioner"
RUNTIME_PREFIX = "netlab-kernel-"


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
    """Install the kernelspec under ``prefix`` (the venv); returns its directory."""
    from jupyter_client.kernelspec import KernelSpecManager

    with tempfile.TemporaryDirectory() as source:
        (Path(source) / "kernel.json").write_text(json.dumps(kernel_spec(), indent=1))
        where = KernelSpecManager().install_kernel_spec(source, KERNEL_NAME, prefix=prefix,
                                                        replace=True)
    return Path(where)


class LabKernelProvisioner(LocalProvisioner):
    """A LocalProvisioner whose kernel talks over unix sockets in a private directory."""

    async def pre_launch(self, **kwargs):
        km = self.parent
        assert km is not None  # jupyter_client makes the kernel manager our parent
        # A restart keeps the connection info, so it keeps the directory it points into.
        if km.transport != "ipc" or not _ours(Path(km.ip).parent):
            runtime = Path(tempfile.mkdtemp(prefix=RUNTIME_PREFIX))  # mode 0700
            km.transport = "ipc"
            km.ip = str(runtime / "kernel")  # channels become kernel-1, kernel-2, ...
        return await super().pre_launch(**kwargs)

    async def cleanup(self, restart: bool = False) -> None:
        await super().cleanup(restart=restart)
        km = self.parent
        if not restart and km is not None and km.transport == "ipc":
            runtime = Path(km.ip).parent
            if _ours(runtime):
                shutil.rmtree(runtime, ignore_errors=True)


def _ours(directory: Path) -> bool:
    return directory.name.startswith(RUNTIME_PREFIX) and directory.is_dir()
