"""The lab's own network: a private network namespace per notebook kernel.

``namespace`` enters one (no root needed: a user + network namespace) and says why
not when the machine refuses; ``kernel`` is the Jupyter side, the ``Python 3 (netlab)``
kernel that runs every notebook inside its own namespace. ``hosts`` makes lab hosts
inside it (``LabNetwork``: client and server namespaces), ``link`` carries frames between
them in user space (``forwarder``: its loop, in a process of its own), ``impairment``
decides what the link does to each frame.
"""
