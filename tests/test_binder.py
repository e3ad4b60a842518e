"""The Binder (repo2docker) configuration in binder/, as far as a machine without a container
engine can check it.

repo2docker builds an image in four steps that matter here: `apt-get install` binder/apt.txt,
a Python of binder/runtime.txt, `pip install -r binder/requirements.txt` run in the
repository's root, then `./binder/postBuild`, also in the root, with that environment's
python first on PATH and HOME the repository. The tests below replay the last two steps:

- the quick one, in every run: postBuild in a fresh environment (its own prefix, its own
  HOME) that borrows the packages of the project's .venv, so it costs seconds;
- the slow one, ``LABKIT_SLOW=1 pytest -m slow tests/test_binder.py`` (.ci/run runs it):
  a copy of the repository, a venv made from nothing, binder/requirements.txt installed into
  it as repo2docker does, then postBuild (about 40 s from pip's cache).

Both then ask the environment itself: the lab kernel is registered in its prefix, starts,
and runs the environment's python with labkit from the repository; handout/ holds every
notebook without its solutions.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
SLOW = os.environ.get("LABKIT_SLOW") == "1"


def _lines(path: Path) -> list[str]:
    """A requirements/apt file's entries: comments and blank lines dropped."""
    return [s for line in path.read_text().splitlines() if (s := line.split("#")[0].strip())]


def test_binder_installs_the_projects_requirements():
    assert _lines(BINDER / "requirements.txt") == ["-r ../requirements.txt"]
    assert (BINDER / "../requirements.txt").resolve() == ROOT / "requirements.txt"


def test_apt_txt_lists_the_makefiles_system_tools():
    makefile = (ROOT / "Makefile").read_text()
    [tools] = re.findall(r"^SYSTEM_TOOLS\s*:=\s*(.+)$", makefile, re.M)
    assert sorted(_lines(BINDER / "apt.txt")) == sorted(tools.split())


def test_runtime_python_is_one_labkit_supports():
    # repo2docker's default Python (3.10 today) is older than labkit's requires-python
    [runtime] = _lines(BINDER / "runtime.txt")
    version = runtime.removeprefix("python-")
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert runtime.startswith("python-") and version in SpecifierSet(requires)


def test_post_build_is_an_executable_script():
    post_build = BINDER / "postBuild"
    assert os.access(post_build, os.X_OK)
    assert post_build.read_text().startswith("#!/bin/bash\n")


# --- postBuild, run --------------------------------------------------------------------

# Run by the environment's python: what `jupyter kernelspec list` finds there, and what runs
# inside the kernel every notebook names when it is started as JupyterLab starts it.
_PROBE = """
import json
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import start_new_kernel
specs = KernelSpecManager().get_all_specs()
km, kc = start_new_kernel(kernel_name="netlab", startup_timeout=60)
out = []
try:
    kc.execute_interactive(
        "import sys, labkit; print(sys.executable); print(labkit.__file__)", timeout=60,
        output_hook=lambda m: out.append(m["content"].get("text", "")))
finally:
    kc.stop_channels()
    km.shutdown_kernel(now=True)
print(json.dumps({"specs": specs, "kernel": "".join(out).split()}))
"""


def _run_post_build(env: Path, repo: Path) -> dict[str, str]:
    """Run binder/postBuild of ``repo`` as repo2docker does; returns the environment used."""
    environ = {**os.environ, "PATH": f"{env / 'bin'}{os.pathsep}{os.environ['PATH']}",
               "HOME": str(repo), "JUPYTER_PLATFORM_DIRS": "1"}
    for name in ("VIRTUAL_ENV", "JUPYTER_PATH", "JUPYTER_DATA_DIR", "PYTHONPATH"):
        environ.pop(name, None)
    done = subprocess.run([repo / "binder" / "postBuild"], cwd=repo, env=environ,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return environ


def _check_the_image(env: Path, repo: Path, environ: dict[str, str], labkit_home: Path) -> None:
    """What the image would offer: the lab kernel registered in ``env``'s prefix, starting,
    running ``env``'s python with labkit from ``labkit_home``; the handout in ``repo``."""
    python = env / "bin" / "python"
    probe = subprocess.run([python, "-c", _PROBE], env=environ, cwd=repo,
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-2000:]
    found = json.loads(probe.stdout.splitlines()[-1])
    netlab = found["specs"]["netlab"]
    assert Path(netlab["resource_dir"]) == env / "share" / "jupyter" / "kernels" / "netlab"
    assert netlab["spec"]["argv"][0] == str(python)
    executable, labkit_file = found["kernel"]
    assert Path(executable) == python
    # labkit from the repository, not a copy in site-packages: replay mode needs its data/
    assert Path(labkit_file).is_relative_to(labkit_home)

    handout = {p.name: p for p in (repo / "handout").rglob("*.ipynb")}
    lessons = sorted(p.name for p in (labkit_home / "notebooks").glob("[0-9][0-9]-*.ipynb"))
    assert lessons and sorted(handout) == lessons
    for path in handout.values():
        assert "### BEGIN SOLUTION" not in path.read_text(), path


@pytest.mark.slow
def test_post_build_in_a_fresh_environment(tmp_path):
    """A new prefix that borrows .venv's packages (a .pth file), so nothing is installed
    in it: postBuild must register the kernel there all the same. labkit is the project's
    (editable, in ROOT); the handout is written where postBuild runs, a scratch folder."""
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", env], check=True, timeout=60)
    [site_dir] = env.glob("lib/python*/site-packages")
    borrowed = sysconfig.get_paths()["purelib"]
    (site_dir / "project_venv.pth").write_text(f"import site; site.addsitedir({borrowed!r})\n")
    repo = tmp_path / "repo"
    (repo / "binder").mkdir(parents=True)
    shutil.copy2(BINDER / "postBuild", repo / "binder" / "postBuild")
    environ = _run_post_build(env, repo)
    _check_the_image(env, repo, environ, labkit_home=ROOT)


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="builds a venv from nothing (~40 s): "
                    "LABKIT_SLOW=1 pytest -m slow tests/test_binder.py (.ci/run does)")
def test_binder_build_from_nothing(tmp_path):
    repo = tmp_path / "repo"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in filter(None, files.split("\0")):
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", env], check=True, timeout=120)
    # repo2docker: ${KERNEL_PYTHON_PREFIX}/bin/pip install -r "binder/requirements.txt",
    # in the repository's root
    subprocess.run([env / "bin" / "pip", "install", "--quiet", "-r", "binder/requirements.txt"],
                   cwd=repo, check=True, timeout=600)
    environ = _run_post_build(env, repo)
    _check_the_image(env, repo, environ, labkit_home=repo)


# --- what the lessons import is what requirements.txt installs ----------------------------

# What a student's `make lab` runs besides the notebooks' kernel: the doctor, the launcher,
# the student edition. labkit's other tools are for maintainers and instructors and may
# import the extras (nbgrader, Sphinx, Playwright), at module level too.
RUNTIME_TOOLS = ("doctor", "lab", "handout")


def _module_level(tree: ast.Module):
    """The statements that run on import: the module's body, into its ifs and trys."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If | ast.Try):
            todo += node.body + node.orelse + getattr(node, "finalbody", [])
            todo += [stmt for handler in getattr(node, "handlers", []) for stmt in handler.body]


def _imports(source: str, everywhere: bool) -> set[str]:
    """The dotted modules ``source`` imports (IPython's %magics and !commands aside): every
    import, or only those that run on import."""
    code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line
                     for line in source.splitlines())
    tree = ast.parse(code)
    found = set()
    for node in ast.walk(tree) if everywhere else _module_level(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def _labkit_file(module: str) -> Path | None:
    path = ROOT / Path(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_the_runtime_dependencies_cover_what_the_lessons_import():
    """What the notebooks import, and what labkit's runtime imports when it is imported
    (every module but the tools, and the tools `make lab` runs, with the labkit modules they
    import), is the standard library, labkit, or a distribution that pyproject.toml lists in
    `dependencies` (what requirements.txt, Binder and `make hub` install): a new import in a
    lesson needs its package there, not in an extra."""
    from importlib.metadata import packages_distributions

    from packaging.requirements import Requirement

    modules = set()
    for notebook in (ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"):
        for cell in json.loads(notebook.read_text())["cells"]:
            if cell["cell_type"] == "code":
                modules |= _imports("".join(cell["source"]), everywhere=True)
    todo = [p for p in (ROOT / "labkit").rglob("*.py") if "tools" not in p.parts]
    todo += [ROOT / "labkit" / "tools" / f"{name}.py" for name in RUNTIME_TOOLS]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imports(path.read_text(), everywhere=False):
            if module.split(".")[0] == "labkit":
                todo += filter(None, [_labkit_file(module)])
            else:
                modules.add(module)
    third_party = {m.split(".")[0] for m in modules} - set(sys.stdlib_module_names) - {
        "labkit", "__future__"}
    declared = {Requirement(r).name.lower().replace("_", "-") for r in tomllib.loads(
        (ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    providers = packages_distributions()
    missing = {m: providers.get(m) for m in sorted(third_party)
               if not {d.lower().replace("_", "-") for d in providers.get(m, [])} & declared}
    assert not missing, (f"imported but not in pyproject.toml's dependencies: {missing}; "
                         "add each distribution there")
