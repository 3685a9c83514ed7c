"""The website's slider frames (tools/site_frames.py): each frame is the figure the notebook's
widget draws at that position, read from a fits file of the notebook's format; a missing file
skips its slider with a note."""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import site_frames  # noqa: E402
from nfutils import checkpoints, flows, widgets  # noqa: E402


def _fits_file(path: Path) -> Path:
    """A fits file in Part 1's format: main planar flows for U1 (K = 3) and U8 (K = 5), with
    their parameters moved off the initialization, plus entries the layer slider must ignore
    (another K, another seed, another kind of flow)."""
    fits = []
    for potential, flow_length, kind, run_seed in (("U1", 3, "planar", 0), ("U8", 5, "planar", 0),
                                                   ("U1", 2, "planar", 0), ("U1", 3, "planar", 1),
                                                   ("U8", 5, "radial", 0)):
        torch.manual_seed(flow_length)
        if kind == "planar":
            model = flows.NormalizingFlow(2, flows.PlanarFlow(2, flow_length, init_scale=0.01))
        else:
            model = flows.make_flow(kind, 2, flow_length)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.8 * torch.randn_like(parameter))
        fits.append(dict(potential=potential, kind=kind, flow_length=flow_length, steps=10, run_seed=run_seed,
                         anneal_fraction=0.5, state_dict=model.state_dict(),
                         history=dict(steps=[0, 9], kl=[1.0, 0.5], seconds=0.1)))
    checkpoints.save_checkpoint({"fits": fits, "settings": {}}, path)
    return path


def test_layer_slider_has_every_layer_of_each_main_flow(tmp_path, monkeypatch):
    monkeypatch.setattr(site_frames, "MAIN_FLOW_LENGTHS", {"U1": 3, "U8": 5})
    slider_set = site_frames.layer_slider(_fits_file(tmp_path / "fits.pt"))
    assert [s.key for s in slider_set.sliders] == ["U1", "U8"]
    for slider, flow_length in zip(slider_set.sliders, (3, 5)):
        assert slider.controls == [("layer k", [str(k) for k in range(flow_length + 1)])]
        assert sorted(slider.frames) == [(k,) for k in range(flow_length + 1)]
        assert slider.start == (flow_length,)
        assert len({frame.sha256 for frame in slider.frames.values()}) == flow_length + 1
        for frame in slider.frames.values():
            assert Image.open(io.BytesIO(frame.png)).format == "PNG"
            assert frame.sha256 == hashlib.sha256(frame.png).hexdigest()


def test_layer_slider_without_the_fits_file_is_skipped_with_a_note(tmp_path):
    note = site_frames.layer_slider(tmp_path / "absent.pt")
    assert isinstance(note, str) and "absent.pt is missing" in note


def test_a_frame_is_the_figure_the_widget_draws_at_that_position():
    rng = np.random.default_rng(0)
    layers = {"U1": [rng.normal(size=(50, 2)) * (1 + k) for k in range(4)]}
    colours = {"U1": rng.random(50)}
    with site_frames.quiet():
        slider_widget = widgets.layer_slider(layers, colours)
    figure = site_frames.drawn_at(slider_widget, potential="U1", k=2)
    np.testing.assert_array_equal(figure.axes[0].collections[0].get_offsets(), layers["U1"][2])
    assert figure.axes[0].get_title().startswith("U1: samples after layer 2 of 3")
    slider = site_frames.slide(slider_widget, "U1", "U1", "layer k", ["0", "1", "2", "3"],
                               [dict(k=k) for k in range(4)], 3)
    assert slider.frames[(2,)].png == site_frames.png_of(figure)  # the same figure, the same bytes


def test_flow_length_slider_has_one_frame_per_committed_model():
    paths = sorted((ROOT / "data" / "checkpoints").glob("mnist40_K*.pt"))
    if not paths:
        pytest.skip("no committed mnist40_K*.pt")
    slider_set = site_frames.flow_length_slider()
    slider = slider_set.sliders[0]
    flow_lengths = sorted(int(p.stem.split("K")[1]) for p in paths)
    assert slider.controls == [("flow length K", [str(k) for k in flow_lengths])]
    assert len({frame.sha256 for frame in slider.frames.values()}) == len(flow_lengths)


def test_cells_are_matched_by_the_widget_they_call():
    assert site_frames.calls("widgets.flow_length_slider(originals, reconstructions)", "flow_length_slider")
    assert not site_frames.calls("widgets.theta_slider(model, energy, radius=2.25)", "theta_slider")
    assert site_frames.calls("widgets.theta_slider(model, energy, radius=2.25)", "theta_radius_slider")
    assert not site_frames.calls("widgets.theta_slider(amortizer, ring_energy, seed=0)", "theta_radius_slider")
    assert not site_frames.calls("plotting.reconstructions_figure(a, b)", "flow_length_slider")
