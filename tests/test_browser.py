"""Notebook 02 as a student sees it: a real JupyterLab in a real (headless) Chromium.

The test starts JupyterLab on a copy of ``notebooks/02_kernelwarehouse_anatomy.ipynb`` (quick mode), opens it
at 1280x720 in Chromium driven by Playwright, runs all cells from the *Run* menu and checks what nbclient
cannot see: that no cell shows an error or a warning (stderr output), that the two sliders render as
widgets (not as "Error displaying widget" or a text repr), that moving a slider redraws the figure under
it, and that after a save the notebook holds the widget state (so a reopened copy shows the sliders).

Screenshots go to ``$KWLAB_BROWSER_ARTIFACTS`` (default ``test-artifacts/browser/`` in the repository; CI
keeps it as an artifact): after the run, the sliders before and after the move, and the reopened notebook.

Needs the Python package ``playwright`` (the ``dev`` extra) and a Chromium: ``$KWLAB_CHROMIUM``, else
``chromium`` on the PATH (Debian's ``chromium`` package, which ``.ci/run`` installs). Playwright's own browser
download is not used. Without either the test is skipped, saying what is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "02_kernelwarehouse_anatomy.ipynb"
ARTIFACTS = Path(os.environ.get("KWLAB_BROWSER_ARTIFACTS", ROOT / "test-artifacts" / "browser"))
RUN_TIMEOUT_S = 150  # all cells of notebook 02 in quick mode (about 40 s on a busy 2-core machine)
CHROMIUM_FLAGS = [  # the flags Chromium needs to run headless as root in a container without a network
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str | None:
    for candidate in (os.environ.get("KWLAB_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _same_python(argv0: str) -> bool:
    if argv0 in ("python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"):
        return True  # jupyter_client substitutes sys.executable for a bare "python"
    try:
        return Path(argv0).resolve() == Path(sys.executable).resolve()
    except OSError:
        return False


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a copy of notebook 02: (url of the notebook, path of the copy)."""
    pytest.importorskip("jupyterlab", reason="JupyterLab is not installed (pip install -e '.[lab]')")
    pytest.importorskip("ipywidgets", reason="ipywidgets is not installed (pip install -e '.[lab]')")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    base = tmp_path_factory.mktemp("lab")
    work = base / "notebooks"
    work.mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, work / NOTEBOOK)
    settings = base / "settings"
    for plugin, values in {
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        "@jupyter-widgets/jupyterlab-manager/plugin": {"saveState": True},
    }.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = dict(os.environ)
    env.update(
        KWLAB_QUICK="1",
        KWLAB_RUNS=str(base / "runs"),
        OMP_NUM_THREADS="1",
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
        JUPYTER_CONFIG_DIR=str(base / "config"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    env.pop("MPLBACKEND", None)
    try:
        ok = _same_python(KernelSpecManager().get_kernel_spec("python3").argv[0])
    except NoSuchKernel:
        ok = False
    if not ok:  # the kernel must run this interpreter (the one with kwlab's dependencies)
        prefix = base / "kernel"
        subprocess.run(
            [sys.executable, "-m", "ipykernel", "install", "--prefix", str(prefix), "--name", "python3"],
            check=True,
            capture_output=True,
        )
        env["JUPYTER_PATH"] = str(prefix / "share" / "jupyter") + os.pathsep + env.get("JUPYTER_PATH", "")
    port, token = _free_port(), "kwlab-browser-test"
    log = open(base / "server.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}"],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240  # a loaded 2-core machine can take minutes
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"JupyterLab did not start:\n{(base / 'server.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK}?token={token}", work / NOTEBOOK
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _figure_src(page) -> str:
    return page.locator(".widget-output img").first.get_attribute("src") or ""


@pytest.mark.slow
def test_notebook_02_in_jupyterlab_in_chromium(lab, tmp_path):
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the Python package playwright is missing (pip install -e '.[dev]')"
    )
    chromium = _chromium()
    if chromium is None:
        pytest.skip(
            "no Chromium found ($KWLAB_CHROMIUM, `chromium` on the PATH, /usr/bin/chromium): "
            "install Debian's package with `apt-get install chromium` (.ci/run does)"
        )
    url, copy = lab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"browser screenshots: {ARTIFACTS}")
    start = time.monotonic()
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh --user-data-dir
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 720},
        )
        try:
            page = context.new_page()
            page.goto(url)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
            page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=90_000)
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_text("Run All Cells", exact=True).click()
            page.wait_for_function(  # every code cell has an execution count: nothing left to run
                """() => { const p = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
                           return p.length > 0 && p.every(e => /\\[\\d+\\]/.test(e.textContent)); }""",
                timeout=RUN_TIMEOUT_S * 1000,
            )
            ran = time.monotonic() - start
            page.screenshot(path=str(ARTIFACTS / "01_after_run_all.png"))

            stderr = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
            texts = [stderr.nth(i).inner_text()[:500] for i in range(stderr.count())]
            assert not texts, f"cells wrote errors or warnings: {texts}"
            assert page.locator("text=Error displaying widget").count() == 0

            sliders = page.locator(".jupyter-widgets .widget-hslider")
            assert sliders.count() == 2, f"expected the two sliders as widgets, found {sliders.count()}"
            assert page.locator(".widget-output img").count() == 1, "no figure under the sliders"
            sliders.first.scroll_into_view_if_needed()
            page.locator(".widget-output img").first.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "02_sliders_before.png"))
            before = _figure_src(page)
            readout = page.locator(".widget-readout").first
            assert readout.inner_text() == "1"

            handle = page.locator(".widget-hslider .noUi-handle").first
            handle.focus()
            page.keyboard.press("ArrowRight")  # budget b: 1 -> 2
            page.wait_for_function(
                """(old) => { const img = document.querySelector('.widget-output img');
                              return img && img.getAttribute('src') !== old; }""",
                arg=before,
                timeout=30_000,
            )
            assert readout.inner_text() == "2"
            page.locator(".widget-output img").first.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "03_sliders_after_moving_budget.png"))
            assert _figure_src(page) != before

            page.keyboard.press("Control+s")  # save: the widget state goes into the notebook
            page.wait_for_function(
                "() => !document.querySelector('.jp-mod-dirty')", timeout=30_000
            )
            saved = json.loads(copy.read_text())
            state = saved["metadata"].get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
            assert state.get("state"), "the saved notebook holds no widget state"
            page.reload()
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
            page.wait_for_timeout(3000)
            page.locator(".jupyter-widgets .widget-hslider").first.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "04_reopened.png"))
            assert page.locator("text=Error displaying widget").count() == 0
            assert page.locator(".jupyter-widgets .widget-hslider").count() == 2
        finally:
            context.close()
    total = time.monotonic() - start
    print(f"notebook 02 ran in the browser in {ran:.0f} s; whole test {total:.0f} s")
