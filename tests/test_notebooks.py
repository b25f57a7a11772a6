"""Execute every teaching notebook top to bottom in quick mode (``KWLAB_QUICK=1``) with nbclient.

A notebook fails the test when any cell raises, or when it produces no figure (no ``image/png`` output):
every notebook teaches with pictures, so a notebook without one has silently skipped its content.

The kernel is the "python3" kernelspec and must run this interpreter (the venv), so that it imports the
kwlab under test; :func:`kernel_name` installs the venv's ipykernel spec if needed. Outputs are not written
back (the committed notebooks stay stripped); set ``KWLAB_NOTEBOOK_OUT=dir`` to keep the executed copies.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT = 900  # seconds per cell (quick mode stays far below)


def _same_python(argv0: str) -> bool:
    if argv0 in ("python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"):
        return True  # jupyter_client substitutes sys.executable for a bare "python"
    try:
        return Path(argv0).resolve() == Path(sys.executable).resolve()
    except OSError:
        return False


@pytest.fixture(scope="session")
def kernel_env(tmp_path_factory) -> dict[str, str]:
    """Environment of the notebook kernels: quick mode, this interpreter's python3 kernel, a scratch dir."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    env = dict(os.environ)
    try:
        spec = KernelSpecManager().get_kernel_spec("python3")
        ok = _same_python(spec.argv[0])
    except NoSuchKernel:
        ok = False
    if not ok:
        # Install this interpreter's kernel into a private JUPYTER_PATH (searched before user/system dirs).
        kdir = tmp_path_factory.mktemp("jupyter")
        subprocess.run(
            [sys.executable, "-m", "ipykernel", "install", "--prefix", str(kdir), "--name", "python3"],
            check=True,
            capture_output=True,
        )
        path = str(kdir / "share" / "jupyter")
        env["JUPYTER_PATH"] = path + os.pathsep + env.get("JUPYTER_PATH", "")
        os.environ["JUPYTER_PATH"] = env["JUPYTER_PATH"]
    scratch = tmp_path_factory.mktemp("notebook_runs")
    env["KWLAB_QUICK"] = "1"
    env.setdefault("KWLAB_CACHE", str(ROOT / "data" / "cache"))
    env["KWLAB_RUNS"] = str(scratch / "runs")
    env.pop("MPLBACKEND", None)  # keep the inline backend, or figures are not captured
    env.setdefault("OMP_NUM_THREADS", "2")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _figures(nb) -> int:
    return sum(
        1
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    )


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_quick_mode(path: Path, kernel_env: dict[str, str], tmp_path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    )
    start = time.perf_counter()
    try:
        client.execute(env=kernel_env)
    finally:
        elapsed = time.perf_counter() - start
        out_dir = os.environ.get("KWLAB_NOTEBOOK_OUT")
        if out_dir:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, Path(out_dir) / path.name)
            with open(Path(out_dir) / "timings.jsonl", "a") as f:
                f.write(json.dumps({"notebook": path.stem, "seconds": round(elapsed, 1)}) + "\n")
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{path.stem}: {elapsed:.1f} s")
    assert _figures(nb) > 0, f"{path.name} produced no figure (no image/png output)"


def test_notebooks_are_stripped_and_documented() -> None:
    """Committed notebooks carry no outputs, and every code cell follows a markdown cell."""
    assert NOTEBOOKS, "no notebooks found in notebooks/"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        previous = None
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} cell {i} has outputs"
                assert previous == "markdown", f"{path.name} cell {i}: code cell without a markdown lead-in"
                lines = [ln.lstrip() for ln in cell.source.splitlines()]
                defs = [ln for ln in lines if ln.startswith(("def ", "class ", "async def "))]
                assert not defs, (
                    f"{path.name} cell {i} defines {defs}: put reusable code in kwlab/teaching.py"
                )
            previous = cell.cell_type
