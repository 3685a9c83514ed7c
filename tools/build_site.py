"""Build the series' website from the committed notebooks: ``make site`` (or ``python tools/build_site.py``).

Nothing is executed and nothing is fetched: the notebooks are rendered with their committed
outputs by MkDocs with mkdocs-jupyter (theme: Material for MkDocs). The steps:

1. draw the frames of every slider the notebooks show (``tools/site_frames.py``, from the
   committed fits, by the notebooks' own widgets; no kernel runs behind a web page);
2. stage ``build/site-src/``: the pages of ``docs/`` (home page, teachers' page) with the table of
   parts filled in, the site's assets (``docs/assets/``: the sliders' script, the local badges, and
   MathJax, copied from ``node_modules/`` where ``npm ci`` installed the version package.json
   pins), the notebooks as static copies (each widget replaced by its slider of precomputed
   frames, or, where no frames could be drawn, by the figure it showed when the notebook ran; each
   badge image by its local copy), and the images the notebooks' markdown links to;
3. ``mkdocs build`` into ``build/site/``, with the pages' URL from pyproject.toml
   (``[project.urls] Documentation``, the one place that names it); each page offers the committed
   notebook for download.

A page asks no other host for anything: the math is rendered by the site's MathJax, the badges
are local images, the theme loads no web font (``tools/check_site.py`` checks all three).

Reading times are computed from word counts (``reading_minutes``); run times are read from each
notebook's header (``run_times``), which states them as measured.
"""

from __future__ import annotations

import copy
import concurrent.futures
import json
import math
import re
import shutil
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import site_frames  # noqa: E402
import site_sliders  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
STAGE = ROOT / "build" / "site-src"
SITE = ROOT / "build" / "site"
TABLE_MARKER = "<!-- table of parts: filled in by tools/build_site.py -->"
# Reading speed: prose at 200 words a minute; code is read about half as fast.
PROSE_WORDS_PER_MINUTE = 200
CODE_WORDS_PER_MINUTE = 100
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
MATHJAX = ROOT / "node_modules" / "mathjax" / "es5" / "tex-svg-full.js"
# badge images the notebooks' headers load from other hosts -> the site's own copy
LOCAL_BADGES = {"https://colab.research.google.com/assets/colab-badge.svg": "assets/badges/colab-badge.svg"}
# "quick mode 15 s", "quick mode: 13 s", "full mode 5.6 min", "full mode 3.0 minutes" in a header
RUN_TIME = {mode: re.compile(rf"{mode} mode:?\s+([\d.]+)\s*(s|min|minutes)\b") for mode in ("quick", "full")}


def pages_url() -> str:
    """The website's URL, from pyproject.toml ([project.urls] Documentation), ending in '/'."""
    url = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Documentation"]
    return url.rstrip("/") + "/"


def page_url(notebook_name: str) -> str:
    """The rendered page of a notebook, e.g. ``.../notebooks/01_planar_flows_2d.html``."""
    return f"{pages_url()}notebooks/{Path(notebook_name).stem}.html"


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def title(notebook: dict) -> str:
    """The header's first line without '# ' (``Part 1 — Planar and radial flows ...``)."""
    first = _source(notebook["cells"][0]).strip().splitlines()[0]
    return first.lstrip("#").strip()


def reading_minutes(notebook: dict) -> int:
    """Minutes to read every markdown and code cell (not the outputs), rounded up."""
    words = {"markdown": 0, "code": 0}
    for cell in notebook["cells"]:
        if cell["cell_type"] in words:
            words[cell["cell_type"]] += len(_source(cell).split())
    return math.ceil(words["markdown"] / PROSE_WORDS_PER_MINUTE + words["code"] / CODE_WORDS_PER_MINUTE)


def run_times(notebook: dict, name: str = "notebook") -> dict[str, str]:
    """{'quick': '15 s', 'full': '5.6 min'}: the first run time the header states for each mode."""
    header = _source(notebook["cells"][0])
    found = {}
    for mode, pattern in RUN_TIME.items():
        match = pattern.search(header)
        if match is None:
            raise ValueError(f"{name}: the header states no {mode}-mode run time "
                             f"(expected e.g. '{mode} mode 15 s' or '{mode} mode 3.2 min')")
        found[mode] = f"{match.group(1)} {'s' if match.group(2) == 's' else 'min'}"
    return found


def parts_table(notebooks: list[Path] = NOTEBOOKS, link_prefix: str = "notebooks/") -> str:
    """Markdown table: part, reading time, run time in quick and full mode."""
    rows = ["| Part | Reading time | Run time, quick mode | Run time, full mode |",
            "| --- | --- | --- | --- |"]
    for path in notebooks:
        notebook = load(path)
        times = run_times(notebook, path.name)
        rows.append(f"| [{title(notebook)}]({link_prefix}{path.stem}.ipynb) | about {reading_minutes(notebook)} min "
                    f"| {times['quick']} | {times['full']} |")
    return "\n".join(rows)


def _widget_outputs(view: dict, state: dict) -> list[dict]:
    """The outputs a widget showed when the notebook ran: those of the Output widgets inside it."""
    found, todo, seen = [], [view["model_id"]], set()
    while todo:
        model_id = todo.pop(0)
        if model_id in seen or model_id not in state:
            continue
        seen.add(model_id)
        model = state[model_id]
        if model.get("model_name") == "OutputModel":
            found.extend(model["state"].get("outputs", []))
        for child in model.get("state", {}).get("children", []):
            todo.append(child.removeprefix("IPY_MODEL_"))
    return found


def _widget_call(cell: dict) -> str | None:
    """The ``nfutils.widgets`` function a code cell calls (``layer_slider``, ...), if any."""
    for name in site_frames.BUILDERS:
        if site_frames.calls(_source(cell), name):
            return name
    return None


def _still_view(data: dict, state: dict) -> list[dict]:
    """What a widget output (its ``data``) showed when the notebook ran (its figure), with a
    note that its controls work in a running notebook; a progress bar becomes its last text."""
    shown = [copy.deepcopy(o) for o in _widget_outputs(data[WIDGET_VIEW], state)]
    if any("image/png" in o.get("data", {}) for o in shown):
        return [{"output_type": "display_data", "metadata": {}, "data": {"text/markdown":
                 "*A static view of the interactive figure: its controls work when the "
                 "notebook runs (JupyterLab or Colab).*"}}] + shown
    text = "".join(data.get("text/plain", ""))
    if text and not text.startswith("interactive("):
        return [{"output_type": "stream", "name": "stdout", "text": text + "\n"}]
    return []


def static_notebook(notebook: dict, sliders: dict[str, str] | None = None) -> dict:
    """A copy for a web page: every widget output is replaced by its slider's HTML
    (``sliders``: widget function name -> HTML) where the cell calls a widget that has one, and
    otherwise by what it displayed (its figure); progress bars become their text; badge images
    become the site's own copies."""
    static = copy.deepcopy(notebook)
    state = static["metadata"].pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in static["cells"]:
        if cell["cell_type"] == "markdown":
            cell["source"] = local_badges(_source(cell))
        if cell["cell_type"] != "code":
            continue
        slider = (sliders or {}).get(_widget_call(cell))
        outputs = []
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_VIEW not in data:
                outputs.append(output)
            elif slider is not None and "".join(data.get("text/plain", "")).startswith("interactive("):
                outputs.append({"output_type": "display_data", "metadata": {}, "data": {"text/html": slider}})
            else:
                outputs.extend(_still_view(data, state))
        cell["outputs"] = outputs
    return static


def local_badges(markdown: str, prefix: str = "../") -> str:
    """Markdown with each badge image of ``LOCAL_BADGES`` pointing at the site's copy (the
    notebooks' pages are one folder down, hence ``../``); the link around it is kept."""
    for url, local in LOCAL_BADGES.items():
        markdown = markdown.replace(f"]({url})", f"]({prefix}{local})")
    return markdown


def widgets_called(notebooks: list[Path] = NOTEBOOKS) -> list[str]:
    """The widget functions the notebooks call, in order of first appearance."""
    names = [_widget_call(cell) for path in notebooks for cell in load(path)["cells"] if cell["cell_type"] == "code"]
    return list(dict.fromkeys(name for name in names if name))


def draw_sliders(names: list[str], workers: int = 2) -> dict[str, site_frames.SliderSet]:
    """The slider set of each widget in ``names`` (``site_frames.BUILDERS``), drawn in
    ``workers`` processes; a widget whose committed files are missing is skipped with a note."""
    names = sorted(names, key=list(site_frames.BUILDERS).index)  # the heaviest first
    with concurrent.futures.ProcessPoolExecutor(workers, initializer=site_frames.one_thread) as pool:
        drawn = dict(zip(names, pool.map(site_frames.build, names)))
    for name, (result, seconds) in drawn.items():
        if isinstance(result, str):
            print(f"note: no slider frames for widgets.{name}: {result}")
        else:
            print(f"  widgets.{name}: {sum(len(s.frames) for s in result.sliders)} frames, {seconds:.0f} CPU-s")
    return {name: result for name, (result, _) in drawn.items() if not isinstance(result, str)}


def _linked_files(notebook: dict) -> set[str]:
    """Relative targets of markdown links and images (``../imgs/x.gif``) in the notebook."""
    targets = set()
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            for target in re.findall(r"\]\(([^)\s]+)\)", _source(cell)) + re.findall(r'src="([^"]+)"', _source(cell)):
                if not re.match(r"[a-z]+:|#", target) and not target.endswith(".ipynb"):
                    targets.add(target.split("#")[0])
    return targets


def stage_assets() -> None:
    """docs/assets/ (sliders' script and style, math configuration, badges) and MathJax."""
    shutil.copytree(ROOT / "docs" / "assets", STAGE / "assets")
    if not MATHJAX.is_file():
        raise SystemExit(f"{MATHJAX.relative_to(ROOT)} is missing: run `npm ci` in the repository root "
                         "(installs the MathJax version package.json pins; `make site` does it)")
    (STAGE / "assets" / "mathjax").mkdir()
    shutil.copy2(MATHJAX, STAGE / "assets" / "mathjax" / MATHJAX.name)
    shutil.copy2(MATHJAX.parent.parent / "LICENSE", STAGE / "assets" / "mathjax" / "LICENSE")


def stage(slider_sets: dict[str, site_frames.SliderSet] | None = None) -> None:
    if STAGE.exists():
        shutil.rmtree(STAGE)
    (STAGE / "notebooks").mkdir(parents=True)
    table = parts_table()
    for page in sorted((ROOT / "docs").glob("*.md")):
        text = page.read_text(encoding="utf-8")
        (STAGE / page.name).write_text(text.replace(TABLE_MARKER, table), encoding="utf-8")
    import reproduction_notes  # the Reproduction notes page, written from data/results/
    (STAGE / "reproduction.md").write_text(reproduction_notes.page(), encoding="utf-8")
    stage_assets()
    slider_sets = slider_sets or {}
    sliders = {name: site_sliders.slider_set_html(slider_set) for name, slider_set in slider_sets.items()}
    manifest = {name: site_sliders.manifest(slider_set) for name, slider_set in slider_sets.items()}
    (STAGE / "assets" / "sliders.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    for path in NOTEBOOKS:
        notebook = load(path)
        (STAGE / "notebooks" / path.name).write_text(json.dumps(static_notebook(notebook, sliders), indent=1),
                                                     encoding="utf-8")
        for target in _linked_files(notebook):
            source = (path.parent / target).resolve()
            if source.is_file() and ROOT in source.parents:
                destination = STAGE / "notebooks" / target
                destination.resolve().parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, destination.resolve())


def offer_committed_notebooks() -> None:
    """Each page's download is the committed notebook (live widgets), not the static copy."""
    for path in NOTEBOOKS:
        shutil.copy2(path, SITE / "notebooks" / path.name)


def build() -> float:
    """Stage and build; returns the seconds it took."""
    from mkdocs.commands.build import build as mkdocs_build
    from mkdocs.config import load_config

    start = time.perf_counter()
    slider_sets = draw_sliders(widgets_called())
    counts = {name: sum(len(s.frames) for s in slider_set.sliders) for name, slider_set in slider_sets.items()}
    print(f"slider frames drawn in {time.perf_counter() - start:.0f} s: "
          + ", ".join(f"{name} {count}" for name, count in counts.items()))
    stage(slider_sets)
    nav = [{"Home": "index.md"}]
    nav += [{title(load(path)): f"notebooks/{path.name}"} for path in NOTEBOOKS]
    nav += [{"For teachers": "teachers.md"}, {"Reproduction notes": "reproduction.md"}]
    config = load_config(config_file=str(ROOT / "mkdocs.yml"), site_url=pages_url(),
                         docs_dir=str(STAGE), site_dir=str(SITE), nav=nav)
    mkdocs_build(config)
    offer_committed_notebooks()
    return time.perf_counter() - start


if __name__ == "__main__":
    seconds = build()
    pages = sorted(SITE.rglob("*.html"))
    print(f"site built in {seconds:.0f} s: {len(pages)} HTML pages in {SITE.relative_to(ROOT)}/ "
          f"(open {SITE.relative_to(ROOT)}/index.html)")
    for page in pages:
        print(f"  {page.relative_to(SITE)}: {page.stat().st_size / 1e6:.1f} MB")
    sys.exit(0)
