"""Interactive figures of the series: small builders returning ``ipywidgets`` objects.

Each builder wraps ONE pure plotting function of ``nfutils.plotting`` with
``ipywidgets.interactive`` (inline matplotlib, never ipympl, so it works on Colab). The callback
draws a fresh ``Figure``, displays it in the widget's output area and returns it, so
``widget.result`` holds the figure last drawn: tests set a control's value and check that the
figure changed; the notebook also draws the default figure statically, which renders without
a kernel.

Sections:

* 2-D flows: ``planar_layer_explorer``, ``layer_slider``.
* Amortized flows: ``theta_slider``.
* A VAE with a 2-D latent: ``latent_slider``.
* A VAE with a 40-D latent: ``flow_length_slider``.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import ipywidgets as widgets
import numpy as np
import torch
from IPython.display import display
from matplotlib.figure import Figure

from . import plotting

__all__ = ["planar_layer_explorer", "layer_slider", "theta_slider", "latent_slider",
           "flow_length_slider"]


def _show(fig: Figure) -> Figure:
    display(fig)
    return fig


# --------------------------------------------------------------------------- 2-D flows


def planar_layer_explorer(w=(1.0, 0.0), u=(1.0, 0.0), b: float = 0.0, constrain: bool = False,
                          extent: float = 3.0, resolution: int = 100) -> widgets.interactive:
    """Sliders for one planar layer's w, u, b (and the App. A.1 constraint) around
    ``plotting.plot_planar_layer``.

    Args:
        w, u, b, constrain: the starting values of the controls.
        extent, resolution: passed to the plotting function (fixed).

    Returns:
        an ``ipywidgets.interactive``; its controls are named w1, w2, u1, u2, b, constrain.
    """

    def draw(w1: float, w2: float, u1: float, u2: float, b: float, constrain: bool) -> Figure:
        return _show(plotting.plot_planar_layer((w1, w2), (u1, u2), b, constrain=constrain,
                                                extent=extent, resolution=resolution))

    def slider(name: str, value: float, low: float = -3.0, high: float = 3.0) -> widgets.FloatSlider:
        return widgets.FloatSlider(value=float(value), min=low, max=high, step=0.1,
                                   description=name, continuous_update=False)

    return widgets.interactive(
        draw, w1=slider("w1", w[0]), w2=slider("w2", w[1]), u1=slider("u1", u[0]),
        u2=slider("u2", u[1]), b=slider("b", b),
        constrain=widgets.Checkbox(value=constrain, description="u_hat (App. A.1)"))


def layer_slider(layers: Mapping[str, Sequence], color_values: Mapping[str, np.ndarray],
                 extent=4.0, point_size: float = 2.0) -> widgets.interactive:
    """A potential dropdown and a layer-index slider around ``plotting.plot_layer_samples``:
    the samples of a trained flow after layer k, coloured by their distance to the base mean
    before any layer.

    Args:
        layers: potential name -> [z_0, ..., z_K] (each (n, 2)) of its trained flow.
        color_values: potential name -> (n,) colours (e.g. ||z_0 - mu||).
        extent: half-width of the square shown.

    Returns:
        an ``ipywidgets.interactive`` with controls ``potential`` (Dropdown) and ``k``
        (IntSlider from 0 to the chosen flow's K, starting at K).
    """
    if not layers:
        raise ValueError("layers is empty: pass {potential name: [z_0, ..., z_K]}")
    if set(layers) != set(color_values):
        raise ValueError(f"layers and color_values must have the same keys; got {sorted(layers)} "
                         f"and {sorted(color_values)}")
    names = list(layers)

    def draw(potential: str, k: int) -> Figure:
        flow_layers = layers[potential]
        k = min(k, len(flow_layers) - 1)
        colours = np.asarray(color_values[potential])
        fig = Figure(figsize=(4.0, 4.0))
        ax = fig.subplots()
        plotting.plot_layer_samples(ax, flow_layers[k], colours, extent,
                                    title=f"{potential}: samples after layer {k} of {len(flow_layers) - 1}",
                                    point_size=point_size, vmax=float(colours.max()))
        fig.tight_layout()
        return _show(fig)

    first_k = len(layers[names[0]]) - 1
    slider = widgets.IntSlider(value=first_k, min=0, max=first_k, step=1, description="layer k",
                               continuous_update=False)
    dropdown = widgets.Dropdown(options=names, value=names[0], description="potential")

    def fit_slider_to_flow(change) -> None:  # the slider spans 0 ... K of the chosen flow
        slider.max = len(layers[change["new"]]) - 1
        slider.value = slider.max

    dropdown.observe(fit_slider_to_flow, names="value")
    return widgets.interactive(draw, potential=dropdown, k=slider)


# --------------------------------------------------------------------------- amortized flows


def theta_slider(model, energy, radius: float | None = None, num_samples: int = 50_000,
                 extent=4.0, bins: int = 100, seed: int = 0) -> widgets.interactive:
    """A slider over the angle θ (and, for an amortizer conditioned on (θ, r), one over the
    ring's radius r) around ``plotting.conditional_pair_figure``: the target p(z | θ) next to
    the empirical density of q(z | θ), which one forward pass of the amortizer gives for any θ.

    Args:
        model: an ``amortized.AmortizedPlanarFlow`` (condition (θ) or (θ, r)).
        energy: U(z; c) (``amortized.ring_energy``).
        radius: the radius slider's starting value; needed when the model takes (θ, r).
        num_samples: draws of q per redraw. extent, bins: the grid of both images.
        seed: the draws use a generator seeded with this at each redraw (same θ, same image).

    Returns:
        an ``ipywidgets.interactive`` with control ``theta`` (FloatSlider, radians, -π ... π)
        and, when the model takes (θ, r), ``radius`` (FloatSlider, 1.0 ... 3.5).
    """
    condition_dim = getattr(model, "condition_dim", 1)
    if condition_dim not in (1, 2):
        raise ValueError(f"theta_slider needs a model conditioned on (θ) or (θ, r); got C = {condition_dim}")
    if condition_dim == 2 and radius is None:
        raise ValueError("the model takes (θ, r): pass radius= (the radius slider's start value)")

    def draw(theta: float, radius: float | None = None) -> Figure:
        condition = [theta] if radius is None else [theta, radius]
        target, q_density = plotting.conditional_densities(
            model, energy, condition, num_samples, extent, bins,
            generator=torch.Generator().manual_seed(seed))
        label = f"θ = {math.degrees(theta):.0f}°" + ("" if radius is None else f", r = {radius:.2f}")
        return _show(plotting.conditional_pair_figure(target, q_density, extent, suptitle=label))

    theta_control = widgets.FloatSlider(value=0.0, min=-math.pi, max=math.pi, step=math.pi / 36,
                                        description="θ (rad)", continuous_update=False,
                                        readout_format=".2f")
    if condition_dim == 1:
        return widgets.interactive(draw, theta=theta_control, radius=widgets.fixed(None))
    radius_control = widgets.FloatSlider(value=float(radius), min=1.0, max=3.5, step=0.05,
                                         description="radius r", continuous_update=False)
    return widgets.interactive(draw, theta=theta_control, radius=radius_control)


# --------------------------------------------------------------------------- VAE, 2-D latent


def latent_slider(models: Mapping, codes: Mapping | None = None, extent: float = 3.0,
                  step: float = 0.05) -> widgets.interactive:
    """Two sliders over the latent position (z1, z2) and a model dropdown around
    ``plotting.latent_decoder_figure``: the decoded digit, live, at any point of the plane.

    Args:
        models: name -> ``vae.VAE`` with a 2-D latent (e.g. {"K = 0": ..., "K = 16": ...}).
        codes: optional name -> (z (n, 2), labels (n,)) drawn behind the marker.
        extent: the sliders' range [-extent, extent]. step: the sliders' step.

    Returns:
        an ``ipywidgets.interactive`` with controls ``model`` (Dropdown), ``z1`` and ``z2``
        (FloatSliders).
    """
    names = list(models)
    if not names:
        raise ValueError("latent_slider needs at least one model")

    def draw(model: str, z1: float, z2: float) -> Figure:
        z, labels = (codes or {}).get(model, (None, None))
        return _show(plotting.latent_decoder_figure(models[model], z1, z2, z, labels, extent))

    def slider(name: str) -> widgets.FloatSlider:
        return widgets.FloatSlider(value=0.0, min=-extent, max=extent, step=step,
                                   description=name, continuous_update=False)

    return widgets.interactive(
        draw, model=widgets.Dropdown(options=names, value=names[0], description="model"),
        z1=slider("z1"), z2=slider("z2"))


# --------------------------------------------------------------------------- VAE, 40-D latent


def flow_length_slider(originals, reconstructions: Mapping[int, np.ndarray]) -> widgets.interactive:
    """A slider over the flow length K around ``plotting.reconstructions_figure``: the same test
    digits reconstructed by the model trained with each K.

    Args:
        originals: (n, 784) test images.
        reconstructions: K -> (n, 784) reconstructions of ``originals`` by the model with that K
            (precomputed, so moving the slider only redraws).

    Returns:
        an ``ipywidgets.interactive`` with control ``flow_length`` (SelectionSlider over the Ks).
    """
    if not reconstructions:
        raise ValueError("reconstructions is empty: pass {K: (n, 784) array}")
    flow_lengths = sorted(reconstructions)

    def draw(flow_length: int) -> Figure:
        return _show(plotting.reconstructions_figure(
            originals, reconstructions[flow_length], title=f"flow length K = {flow_length}"))

    return widgets.interactive(draw, flow_length=widgets.SelectionSlider(
        options=flow_lengths, value=flow_lengths[-1], description="K", continuous_update=False))
