"""Execute every teaching notebook top to bottom in quick mode (``KWLAB_QUICK=1``) with nbclient.

A notebook fails the test when any cell raises, or when it produces no figure (no ``image/png`` output):
every notebook teaches with pictures, so a notebook without one has silently skipped its content.
The static checks (no kernel) hold every notebook to the house rules of issue 13: stripped outputs, a markdown
lead-in before every code cell, nothing reusable defined in a cell, one torch thread in quick mode, and
exercises with hideable solutions at the end. The small trained networks in ``data/checkpoints/`` that the
analysis notebooks read are checked too (they load strictly with ``weights_only=True`` and have learned).

The kernel is the "python3" kernelspec and must run this interpreter (the venv), so that it imports the
kwlab under test; :func:`kernel_name` installs the venv's ipykernel spec if needed. Outputs are not written
back (the committed notebooks stay stripped); set ``KWLAB_NOTEBOOK_OUT=dir`` to keep the executed copies.
"""

from __future__ import annotations

import json
import os
import re
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
    env.setdefault("OMP_NUM_THREADS", "1")  # the notebooks set one torch thread in quick mode
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


def test_notebooks_choose_threads_and_end_with_exercises() -> None:
    """Quick mode sets one torch thread (with a comment); the last cell: exercises in a <details> block."""
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        assert "torch.set_num_threads(1)  #" in code, (
            f"{path.name}: quick mode must set one thread, with a comment"
        )
        last = nb.cells[-1]
        assert last.cell_type == "markdown" and "Exercises" in last.source, (
            f"{path.name}: no closing exercises"
        )
        assert "<details>" in last.source and "</details>" in last.source, (
            f"{path.name}: the exercises need hints or solutions in a <details> block a teacher can remove"
        )


def test_quick_mode_is_the_default(monkeypatch) -> None:
    from kwlab import teaching

    monkeypatch.delenv("KWLAB_QUICK", raising=False)
    assert teaching.quick_mode() is True
    for value, expected in (("1", True), ("yes", True), ("0", False), ("False", False), ("off", False)):
        monkeypatch.setenv("KWLAB_QUICK", value)
        assert teaching.quick_mode() is expected, value
    monkeypatch.setenv("KWLAB_QUICK", "maybe")
    with pytest.raises(ValueError, match="KWLAB_QUICK"):
        teaching.quick_mode()


CHECKPOINTS = sorted(p for p in (ROOT / "data" / "checkpoints").glob("*") if (p / "model.pt").exists())


@pytest.mark.parametrize("folder", CHECKPOINTS, ids=[p.name for p in CHECKPOINTS])
def test_checkpoint_loads_and_has_learned(folder: Path) -> None:
    """Each notebook checkpoint: a state_dict only (weights_only=True), built from its stored RunConfig with a
    strict load, a git revision, a few MB at most; on CIFAR-10 test images (when $KWLAB_DATA has them) it
    scores more than twice chance, which is what the notebooks claim of it."""
    import torch

    from kwlab import teaching
    from kwlab.experiments import Trainer
    from kwlab.experiments.data import load_data
    from kwlab.experiments.data_readers import DatasetNotFoundError
    from kwlab.experiments.data_sources import resolve_source

    assert (folder / "model.pt").stat().st_size < 5_000_000
    state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    model, config, record = teaching.load_checkpoint(folder.name, root=folder.parent)
    assert set(state) == set(model.state_dict())
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", record["git_revision"]), record["git_revision"]
    assert record["final"]["epoch"] == config.epochs
    try:
        resolve_source(config.data, None, download=False)
    except DatasetNotFoundError:
        pytest.skip(f"{config.data} not available locally")
    data = load_data(config.data, train_samples=100, test_samples=500)
    torch.set_num_threads(1)
    acc = Trainer(
        config.replace(train_samples=100, test_samples=500), data=data, model=model, progress=False
    ).evaluate()["test_acc"]
    assert acc > 2 / data.num_classes, f"{folder.name}: accuracy {acc:.3f} on 500 test images"


def test_randomize_attention_changes_only_the_attention() -> None:
    import torch

    import kwlab
    from kwlab import teaching
    from kwlab.layers.base import DynamicAttention

    torch.manual_seed(0)
    model = kwlab.create_model(
        "resnet20_cifar", num_classes=10, method="kw", budget=1, sharing="layer", widths=(8, 16, 32)
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rand = teaching.randomize_attention(model, seed=1)
    attention = {
        f"{name}.{k}"
        for name, m in model.named_modules()
        if isinstance(m, DynamicAttention)
        for k in m.state_dict()
    }
    assert attention
    after = rand.state_dict()
    for key, value in before.items():
        assert torch.equal(model.state_dict()[key], value), f"original changed at {key}"
        if key not in attention:
            assert torch.equal(after[key], value), f"non-attention entry {key} changed"
    changed = [k for k in attention if k.endswith("weight") and not torch.equal(after[k], before[k])]
    assert changed, "no attention weight was re-drawn"


MAX_CODE_LINE = 100  # characters: wider code is cut off at 1280x720 (a projector) in JupyterLab


def test_notebook_code_fits_a_projector() -> None:
    """No code line is wider than MAX_CODE_LINE characters (issue 23: long lines were cut off at 1280x720)."""
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            wide = [ln for ln in cell.source.splitlines() if len(ln) > MAX_CODE_LINE]
            assert not wide, f"{path.name} cell {i}: {len(wide)} lines > {MAX_CODE_LINE} chars: {wide[0]!r}"


def test_lab_extra_installs_what_the_notebooks_import() -> None:
    """Every third-party module a notebook imports comes with `pip install "kwlab[lab]"`."""
    import importlib.metadata as md

    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["lab"]
    provided = {re.split(r"[\s<>=!~\[;]", req, maxsplit=1)[0].lower().replace("_", "-") for req in wanted}
    provided |= {"ipython", "jupyter-core"}  # ipykernel's own dependencies (IPython.display)
    dists = md.packages_distributions()
    missing = {}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            for line in cell.source.splitlines():
                m = re.match(r"\s*(?:from|import)\s+([A-Za-z_][\w]*)", line)
                if not m or m.group(1) in sys.stdlib_module_names or m.group(1) == "kwlab":
                    continue
                names = {d.lower().replace("_", "-") for d in dists.get(m.group(1), [m.group(1)])}
                if not names & provided:
                    missing.setdefault(m.group(1), set()).add(path.name)
    assert not missing, f"modules imported by notebooks but not in the [lab] extra: {missing}"
