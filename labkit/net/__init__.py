"""The lab's own network: a private network namespace per notebook kernel.

``namespace`` enters one (no root needed: a user + network namespace) and says why
not when the machine refuses; ``kernel`` is the Jupyter side, the ``Python 3 (netlab)``
kernel that runs every notebook inside its own namespace. ``topology`` plans a network of
lab hosts and routers (cables, subnets, addresses, routes), ``hosts`` builds it inside the
kernel's namespace (``LabNetwork``) with ``netns``'s namespace calls, ``link`` carries the
frames of impaired cables in user space (``forwarder``: its loop, in a process of its
own), ``impairment`` decides what it does to each frame.
"""
