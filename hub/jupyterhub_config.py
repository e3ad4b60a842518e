"""JupyterHub for a class on one machine, without containers: each student a Unix user
whose server LocalProcessSpawner starts from the shared environment that `make hub` made.

    sudo git clone <this repository> /opt/netlab && sudo make -C /opt/netlab hub
    sudo /opt/netlab/.venv/bin/jupyterhub -f /opt/netlab/hub/jupyterhub_config.py

docs/teaching.md ("A hub without containers") says the rest: users with 0700 homes, TLS,
sizing. tests/test_hub.py starts JupyterHub with this file (its own ports and users added).
"""

import pwd
import subprocess
from pathlib import Path

c = get_config()  # noqa: F821 - provided by JupyterHub's config loader

NETLAB = Path(__file__).resolve().parents[1]  # the clone: must stay readable by every user
ENV = NETLAB / ".venv"                        # the shared environment `make hub` made

# Every student's server: the shared environment's single-user JupyterLab, which finds the
# lab kernel, Python 3 (netlab), in that environment (installed readable by all).
c.Spawner.cmd = [str(ENV / "bin" / "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab/tree/netlab/00-Start-Here.ipynb"

# A class starts at once. Measured here: 20 servers started together were all ready in
# 42-51 s; JupyterHub's default http_timeout (30 s) let none of them start.
c.Spawner.http_timeout = 180
c.Spawner.start_timeout = 180


def copy_the_handout(spawner):
    """The student edition into the student's home, on their first start, as the student
    (so a link or a file they made there is never written through with root's rights)."""
    home = Path(pwd.getpwnam(spawner.user.name).pw_dir)
    if not (home / "netlab").exists():
        subprocess.run(["cp", "-r", str(NETLAB / "handout"), str(home / "netlab")],
                       user=spawner.user.name, cwd=home, check=True, timeout=60)


c.Spawner.pre_spawn_hook = copy_the_handout
