"""The notebooks in JupyterLab, driven in a real browser (Debian's Chromium, headless).

A ``jupyter lab`` server starts on 127.0.0.1 with a random free port, a random token and fresh
config, data, runtime and settings folders, serving a scratch copy of the repository's
notebooks (so the run writes no figure, checkpoint or autosave into the repository), with
``NF_QUICK=1`` in its environment. Playwright drives ``/usr/bin/chromium`` (never a downloaded
browser) with a fresh profile. For each notebook the test opens it, runs all cells from the Run
menu, checks that no cell shows an error, drags the slider of its interactive figure, and checks
that the figure's image data changed. Screenshots of each figure before and after go to
``.artifacts/screenshots/`` (git-ignored); their paths are printed.

The server is stopped in a ``finally`` (its kernels shut down through the REST API, then its
process group terminated, then killed), whether the test passes or fails.

Skips only when Chromium or playwright is missing outside CI; with ``CI=true`` that is a failure.
Run alone: ``pytest tests/test_browser.py -m browser -s``.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / ".artifacts" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
# Flags this closed network needs: without the background-networking ones Chromium keeps
# trying to reach Google's hosts. --headless is also what Playwright passes.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
SERVER_START_TIMEOUT_S = 120
RUN_ALL_TIMEOUT_S = 900
FIGURE_UPDATE_TIMEOUT_S = 120

# (notebook, label of its slider, what the slider is): the interactive figure each part must have.
CASES = [
    ("01_planar_flows_2d.ipynb", r"layer k", "layer-index slider (Part 1)"),
    ("02_amortized_flows.ipynb", r"θ \(rad\)", "angle slider (Part 2)"),
]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _require(condition: bool, reason: str) -> None:
    """Skip when a prerequisite is missing on a developer's machine; fail in CI."""
    if condition:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: .ci/run must install it)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _api(base_url: str, token: str, path: str, method: str = "GET"):
    request = urllib.request.Request(f"{base_url}{path}", method=method,
                                     headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


def _kill_leftover_kernels(runtime_dir: Path) -> None:
    """SIGKILL kernels of this server that outlived it (found by their connection file, which lies
    in this server's own runtime folder)."""
    marker = str(runtime_dir).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


def _terminate_with_parent() -> None:
    """In the server's process (before exec): get SIGTERM if pytest itself dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _scratch_copy(workspace: Path) -> None:
    """What the notebooks need from the repository: pyproject.toml (they find the root by it),
    notebooks/, empty imgs/, data/ (checkpoints copied, MNIST linked: nfutils reads it from the
    repository anyway)."""
    shutil.copy2(ROOT / "pyproject.toml", workspace / "pyproject.toml")
    (workspace / "notebooks").mkdir()
    for notebook in (ROOT / "notebooks").glob("*.ipynb"):
        shutil.copy2(notebook, workspace / "notebooks" / notebook.name)
    (workspace / "imgs").mkdir()
    (workspace / "data").mkdir()
    if (ROOT / "data" / "checkpoints").is_dir():
        shutil.copytree(ROOT / "data" / "checkpoints", workspace / "data" / "checkpoints")
    if (ROOT / "data" / "mnist").is_dir():
        (workspace / "data" / "mnist").symlink_to(ROOT / "data" / "mnist")


@pytest.fixture(scope="module")
def jupyter_lab(tmp_path_factory):
    """A running ``jupyter lab``: yields (base URL, token); always stopped afterwards."""
    home = tmp_path_factory.mktemp("lab")
    workspace, runtime_dir = home / "workspace", home / "runtime"
    workspace.mkdir()
    _scratch_copy(workspace)
    config_dir = home / "config"
    config_dir.mkdir()
    # Nothing fetched from the internet: no news feed, no update check. window.jupyterapp
    # lets the test read the notebook's model (outputs, execution counts).
    (config_dir / "jupyter_server_config.json").write_text(json.dumps({"LabApp": {
        "news_url": None, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
        "extension_manager": "readonly", "expose_app_in_browser": True}}))
    settings_dir = home / "lab-settings" / "@jupyterlab" / "notebook-extension"
    settings_dir.mkdir(parents=True)
    # every cell in the DOM, as a reader scrolling through would see it
    (settings_dir / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))

    port, token = _free_port(), secrets.token_hex(24)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("JUPYTER", "MPLBACKEND"))}
    env.update(NF_QUICK="1", JUPYTER_CONFIG_DIR=str(config_dir), JUPYTER_DATA_DIR=str(home / "data"),
               JUPYTER_RUNTIME_DIR=str(runtime_dir), IPYTHONDIR=str(home / "ipython"),
               JUPYTERLAB_SETTINGS_DIR=str(home / "lab-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "lab-workspaces"), PYTHONUNBUFFERED="1")
    log_path = home / "server.log"
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={workspace}"]
    if os.geteuid() == 0:  # CI runs as root
        command.append("--allow-root")
    base_url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True,
                                  preexec_fn=_terminate_with_parent)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if server.poll() is not None:
                raise AssertionError(f"jupyter lab exited {server.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                _api(base_url, token, "/api/status")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    raise AssertionError(f"jupyter lab did not answer in {SERVER_START_TIMEOUT_S} s:\n"
                                         f"{log_path.read_text()[-4000:]}") from None
                time.sleep(0.5)
        yield base_url, token, workspace
    finally:
        try:
            for kernel in _api(base_url, token, "/api/kernels") or []:
                _api(base_url, token, f"/api/kernels/{kernel['id']}", method="DELETE")
        except Exception:  # noqa: BLE001 - the server may already be gone; killing follows anyway
            pass
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        _kill_leftover_kernels(runtime_dir)


@contextlib.contextmanager
def chromium_context(profile: Path, width: int, route=None):
    """A headless Chromium context with the profile folder ``profile`` and a viewport ``width``
    pixels wide (every request passed to ``route`` when given); closed afterwards."""
    _require(CHROMIUM.exists(), f"{CHROMIUM} not found (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require(False, "the playwright package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            user_data_dir=str(profile), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": width, "height": 1000})
        if route is not None:
            context.route("**/*", route)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    """A Chromium context with a fresh profile; closed afterwards."""
    with chromium_context(tmp_path_factory.mktemp("chromium-profile"), 1400) as context:
        yield context


# JavaScript run in the page: the current notebook's state, read from its model.
NOTEBOOK_STATE_JS = """() => {
  const app = window.jupyterapp;
  const panel = app && app.shell.currentWidget;
  if (!panel || !panel.content || !panel.content.model || !panel.sessionContext) return null;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const cells = [];
  const model = panel.content.model;
  for (let i = 0; i < model.cells.length; i++) {
    const cell = model.cells.get(i);
    if (cell.type !== 'code') continue;
    const errors = [];
    for (let j = 0; j < cell.outputs.length; j++) {
      const output = cell.outputs.get(j).toJSON();
      if (output.output_type === 'error') errors.push(output.ename + ': ' + output.evalue);
    }
    cells.push({index: i, count: cell.executionCount, errors: errors});
  }
  const prompts = Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) '
      + '.jp-CodeCell .jp-InputPrompt')).map(node => node.textContent.trim());
  return {kernel: kernel ? kernel.status : 'none', cells: cells, prompts: prompts};
}"""


def _wait_for_notebook_idle(page, timeout_s: float, require_all_executed: bool) -> dict:
    """Poll the notebook until its kernel is idle and no cell waits to run ([*]); with
    ``require_all_executed``, also until every code cell has an execution count or one failed."""
    deadline = time.monotonic() + timeout_s
    state, idle_since = None, None
    while time.monotonic() < deadline:
        state = page.evaluate(NOTEBOOK_STATE_JS)
        done = (state is not None and state["kernel"] == "idle"
                and not any("*" in prompt for prompt in state["prompts"])
                and (not require_all_executed
                     or all(cell["count"] is not None for cell in state["cells"])
                     or any(cell["errors"] for cell in state["cells"])))
        if done:
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > 2.0:  # idle for 2 s, not between two cells
                return state
        else:
            idle_since = None
        time.sleep(0.5)
    raise AssertionError(f"notebook not done after {timeout_s:.0f} s; last state: {state}")


def _png_pixels(data_url: str) -> np.ndarray:
    from PIL import Image

    assert data_url.startswith("data:image/png;base64,"), data_url[:80]
    image = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB")
    return np.asarray(image)


def _slider_value(slider) -> str:
    return slider.locator(".widget-readout").inner_text().strip()


def _file_safe(text: str) -> str:
    """A slider readout as a file-name part (the readout writes minus as U+2212)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text.replace("\u2212", "-"))


def _drag_slider(page, slider) -> None:
    """Drag the slider's handle with the mouse, as a reader would: a third of the track towards
    the side with more room."""
    track = slider.locator(".noUi-target").bounding_box()
    handle = slider.locator(".noUi-handle").bounding_box()
    assert track and handle, "slider not rendered"
    x, y = handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
    direction = -1 if x > track["x"] + track["width"] / 2 else 1
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + direction * track["width"] / 3, y, steps=12)
    page.mouse.up()


def _figure_src(container) -> str | None:
    images = container.locator(".widget-output img")
    return images.first.get_attribute("src") if images.count() else None


@pytest.mark.parametrize("notebook, slider_label, what", CASES, ids=[case[0] for case in CASES])
def test_notebook_runs_and_slider_redraws_figure(browser_context, jupyter_lab, capsys,
                                                  notebook, slider_label, what):
    base_url, token, workspace = jupyter_lab
    assert (workspace / "notebooks" / notebook).exists(), f"notebooks/{notebook} is missing"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    stem = Path(notebook).stem
    for old_screenshot in SCREENSHOTS.glob(f"{stem}_*.png"):  # only this run's pictures remain
        old_screenshot.unlink()
    page = browser_context.new_page()
    console_errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and console_errors.append(message.text))
    failed_requests: list[str] = []  # e.g. a notebook's external image on this closed network
    page.on("requestfailed", lambda request: failed_requests.append(f"{request.url} ({request.failure})"))
    timings: dict[str, float] = {}
    try:
        start = time.monotonic()
        page.goto(f"{base_url}/lab/tree/notebooks/{notebook}?token={token}", timeout=120_000)
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
        _wait_for_notebook_idle(page, 120, require_all_executed=False)  # kernel started
        timings["open"] = time.monotonic() - start

        start = time.monotonic()
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        state = _wait_for_notebook_idle(page, RUN_ALL_TIMEOUT_S, require_all_executed=True)
        timings["run all"] = time.monotonic() - start
        page.screenshot(path=str(SCREENSHOTS / f"{stem}_after_run_all.png"))

        failed = [(cell["index"], cell["errors"]) for cell in state["cells"] if cell["errors"]]
        assert not failed, f"{notebook}: cells with errors (cell index, error): {failed}"
        unexecuted = [cell["index"] for cell in state["cells"] if cell["count"] is None]
        assert not unexecuted, f"{notebook}: code cells that did not run: {unexecuted}"
        shown = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output")
        page_text = "\n".join(shown.all_inner_texts())
        for sign in ("Traceback (most recent call last)", "Error displaying widget",
                     "Error rendering output", "Kernel Restarting", "Kernel died"):
            assert sign not in page_text, f"{notebook}: the page shows {sign!r}"

        label = re.compile(rf"^\s*{slider_label}\s*$")
        sliders = page.locator(".widget-slider").filter(
            has=page.locator(".widget-label", has_text=label))
        n_sliders = sliders.count()
        assert n_sliders >= 1, f"{notebook}: no slider labelled {slider_label!r}"
        slider = sliders.first  # the first one (Part 2 has a second, for the (θ, r) model)
        container = slider.locator("xpath=ancestor::div[contains(concat(' ', @class, ' '), ' widget-interact ')][1]")
        container.scroll_into_view_if_needed()
        before_src = _figure_src(container)
        assert before_src, f"{notebook}: the {what}'s figure is not shown"
        before_value = _slider_value(slider)
        before_path = SCREENSHOTS / f"{stem}_slider_{_file_safe(before_value)}.png"
        container.screenshot(path=str(before_path))

        start = time.monotonic()
        _drag_slider(page, slider)
        after_value = _slider_value(slider)
        assert after_value != before_value, f"{notebook}: dragging did not move the {what} ({before_value})"
        deadline = time.monotonic() + FIGURE_UPDATE_TIMEOUT_S
        after_src = _figure_src(container)
        while after_src in (None, before_src) and time.monotonic() < deadline:
            time.sleep(0.25)
            after_src = _figure_src(container)
        timings["redraw"] = time.monotonic() - start
        assert after_src and after_src != before_src, (
            f"{notebook}: the figure did not change within {FIGURE_UPDATE_TIMEOUT_S} s "
            f"after the {what} went from {before_value} to {after_value}")
        _wait_for_notebook_idle(page, FIGURE_UPDATE_TIMEOUT_S, require_all_executed=False)
        after_src = _figure_src(container)
        after_path = SCREENSHOTS / f"{stem}_slider_{_file_safe(after_value)}.png"
        container.screenshot(path=str(after_path))

        pixels_before, pixels_after = _png_pixels(before_src), _png_pixels(after_src)
        assert pixels_before.shape == pixels_after.shape, (pixels_before.shape, pixels_after.shape)
        changed = float(np.mean(np.any(pixels_before != pixels_after, axis=-1)))
        assert changed > 0.001, f"{notebook}: only {changed:.4%} of the figure's pixels changed"
        widget_errors = container.locator('[data-mime-type="application/vnd.jupyter.stderr"]')
        assert widget_errors.count() == 0, (
            f"{notebook}: the {what}'s callback failed:\n" + "\n".join(widget_errors.all_inner_texts()))

        with capsys.disabled():
            print(f"\n[browser] {notebook}: {len(state['cells'])} code cells ran without error; "
                  f"{what} (first of {n_sliders}) {before_value} -> {after_value}, {changed:.1%} of the figure's pixels changed; "
                  + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items()))
            for path in (SCREENSHOTS / f"{stem}_after_run_all.png", before_path, after_path):
                print(f"[browser] screenshot: {path.relative_to(ROOT)}")
            if console_errors:
                print(f"[browser] {len(console_errors)} console error(s) in the page, first: {console_errors[0][:300]}")
            for request in failed_requests[:5]:
                print(f"[browser] request failed: {request[:300]}")
    except Exception:
        failure_path = SCREENSHOTS / f"{stem}_failure.png"
        page.screenshot(path=str(failure_path), full_page=True)
        with capsys.disabled():
            print(f"\n[browser] failure screenshot: {failure_path.relative_to(ROOT)}")
        raise
    finally:
        page.close()
