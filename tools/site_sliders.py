"""The HTML of a website slider: an ``<input type="range">`` over embedded PNG frames.

Why this mechanism: a range input is the browser's own slider (keyboard, touch and screen readers
work with it), and the frames are plain ``<img>`` elements with their PNG inline, so a page saved
to disk still has every frame, and nothing is fetched when the slider moves. matplotlib's
``Animation.to_jshtml`` was the alternative; it draws a player (play, loop, step buttons) for a
film rather than a control for a parameter, keeps its frames in a script rather than in elements
a test can address, and has no way to span two parameters (Part 3's latent plane). The script
that moves the frames is ``docs/assets/sliders.js`` (thirty lines, no library).

Each frame carries its identity: ``data-index`` (its position along the controls),
``data-value`` (the parameter value, as the readout shows it) and ``data-sha256`` (the hash of
its PNG, recorded when the frame was drawn). ``manifest`` lists the same for the tests.
"""

from __future__ import annotations

import base64
import html
import json

from site_frames import Slider, SliderSet

NOTE = ("Drag the slider (or focus it and use the arrow keys): each position shows a frame drawn "
        "from the committed fits by the notebook's own widget. In JupyterLab or Colab the live "
        "widget computes any value; here the frames are precomputed, so nothing needs to run.")


def frame_index(position: tuple[int, ...]) -> str:
    return ",".join(str(i) for i in position)


def control_html(name: str, values: list[str], start: int) -> str:
    """A labelled range input over the positions 0 ... len(values) - 1, with its readout."""
    return (f'<label class="nf-control">{html.escape(name)} '
            f'<input type="range" min="0" max="{len(values) - 1}" step="1" value="{start}" '
            f'data-values="{html.escape(json.dumps(values))}" aria-label="{html.escape(name)}">'
            f'<output>{html.escape(values[start])}</output></label>')


def frame_html(slider: Slider, position: tuple[int, ...], title: str) -> str:
    frame = slider.frames[position]
    payload = base64.b64encode(frame.png).decode("ascii")
    hidden = "" if position == slider.start else " hidden"
    return (f'<img class="nf-frame" data-index="{frame_index(position)}" data-value="{html.escape(frame.value)}" '
            f'data-sha256="{frame.sha256}" alt="{html.escape(f"{title}, {slider.label}: {frame.value}")}" '
            f'src="data:image/png;base64,{payload}"{hidden}>')


def panel_html(slider: Slider, title: str, shown: bool) -> str:
    """One slider: its controls, then every frame (only the one at the start position visible)."""
    controls = "".join(control_html(name, values, start)
                       for (name, values), start in zip(slider.controls, slider.start))
    frames = "".join(frame_html(slider, position, title) for position in slider.frames)
    return (f'<div class="nf-panel" data-key="{html.escape(slider.key)}"{"" if shown else " hidden"}>'
            f'<div class="nf-controls">{controls}</div><div class="nf-frames">{frames}</div></div>')


def chooser_html(sliders: list[Slider]) -> str:
    """A select over the sliders of a set (e.g. one per potential), or nothing for one slider."""
    if len(sliders) < 2:
        return ""
    options = "".join(f'<option value="{html.escape(s.key)}">{html.escape(s.label)}</option>' for s in sliders)
    return f'<label class="nf-choice">show <select aria-label="which slider">{options}</select></label>'


def slider_set_html(slider_set: SliderSet) -> str:
    """The whole figure that replaces a widget on the page."""
    panels = "".join(panel_html(slider, slider_set.title, index == 0)
                     for index, slider in enumerate(slider_set.sliders))
    return (f'<div class="nf-slider" data-widget="{html.escape(slider_set.widget)}">'
            f'<p class="nf-slider-title">{html.escape(slider_set.title)}</p>{chooser_html(slider_set.sliders)}'
            f'{panels}<p class="nf-slider-note">{NOTE} ({html.escape(slider_set.note)}.)</p></div>')


def manifest(slider_set: SliderSet) -> dict:
    """{slider key: {"controls": [...], "start": "i,j", "frames": {"i,j": {"value", "sha256"}}}}."""
    return {slider.key: {"label": slider.label, "controls": [name for name, _ in slider.controls],
                         "start": frame_index(slider.start),
                         "frames": {frame_index(position): {"value": frame.value, "sha256": frame.sha256}
                                    for position, frame in slider.frames.items()}}
            for slider in slider_set.sliders}
