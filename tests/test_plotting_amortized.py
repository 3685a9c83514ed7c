"""Conditional-flow figures (nfutils/plotting/amortized.py): densities on a grid against
closed forms, figure layouts, the animation saved as a GIF."""

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from nfutils import plotting
from nfutils.amortized import AmortizedPlanarFlow


def standard_normal_amortizer() -> AmortizedPlanarFlow:
    """q(z | θ) = N(0, I) for every θ: no layers, a zero output layer."""
    model = AmortizedPlanarFlow(dim=2, flow_length=0, hidden=4)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    return model


def shifted_normal_energy(z, condition):
    """p(z | θ) = N((cos θ, sin θ), I)."""
    mean = torch.stack([condition[:, 0].cos(), condition[:, 0].sin()], -1).unsqueeze(1)
    return 0.5 * ((z - mean) ** 2).sum(-1)


def test_conditional_densities_against_closed_forms():
    model = standard_normal_amortizer()
    theta = 0.8
    target, q_density = plotting.conditional_densities(
        model, shifted_normal_energy, theta, num_samples=200_000, extent=5.0, bins=50,
        generator=torch.Generator().manual_seed(0))
    assert target.shape == q_density.shape == (50, 50)
    centres = np.linspace(-5 + 0.1, 5 - 0.1, 50)
    grid_x, grid_y = np.meshgrid(centres, centres)  # [row = z2, column = z1]
    exact_target = np.exp(-0.5 * ((grid_x - math.cos(theta)) ** 2 + (grid_y - math.sin(theta)) ** 2)) / (2 * math.pi)
    exact_q = np.exp(-0.5 * (grid_x ** 2 + grid_y ** 2)) / (2 * math.pi)
    assert np.abs(target - exact_target).max() < 1e-4
    # a histogram of 2e5 draws on 0.2 x 0.2 cells: relative noise ~ 1 / sqrt(2e5 * 0.04 * 0.16)
    assert np.abs(q_density - exact_q).max() < 0.02
    assert abs(q_density.sum() * 0.04 - 1.0) < 1e-3


def test_pair_grid_and_gap_figures():
    rng = np.random.default_rng(0)
    target, q_density = rng.random((20, 20)), rng.random((20, 20))
    fig = plotting.conditional_pair_figure(target, q_density, suptitle="θ = 0°")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    np.testing.assert_array_equal(fig.axes[1].images[0].get_array(), q_density)
    assert fig.axes[1].images[0].get_clim()[1] == pytest.approx(target.max())
    with pytest.raises(ValueError, match="same shape"):
        plotting.conditional_pair_figure(target, q_density[:10])

    labels = [f"θ = {k * 36}°" for k in range(10)]
    grid = plotting.conditional_grid(labels, [q_density] * 10, [target] * 10)
    assert len(grid.axes) == 10 and grid.axes[9].get_title() == "θ = 324°"
    assert len(grid.axes[0].collections) > 0  # the target's contour lines
    with pytest.raises(ValueError, match="as many"):
        plotting.conditional_grid(labels, [q_density] * 9, [target] * 10)

    fig = Figure()
    ax = fig.subplots()
    angles = np.linspace(-math.pi, math.pi, 8, endpoint=False)
    plotting.plot_amortization_gap(ax, angles, angles * 0 + 0.3, angles * 0 + 0.1,
                                   stderr_amortized=angles * 0 + 0.01,
                                   curve_angles=np.linspace(-math.pi, math.pi, 50),
                                   curve_kl=np.full(50, 0.3))
    assert ax.get_ylabel() == "KL(q || p) [nats]"
    with pytest.raises(ValueError, match="one length"):
        plotting.plot_amortization_gap(ax, angles, angles[:3], angles)


def test_conditional_animation_saves_a_gif_with_one_frame_per_label(tmp_path):
    from matplotlib.animation import PillowWriter
    from PIL import Image

    rng = np.random.default_rng(1)
    labels = ["a", "b", "c"]
    targets = [rng.random((10, 10)) for _ in labels]
    qs = [rng.random((10, 10)) for _ in labels]
    anim = plotting.conditional_animation(labels, targets, qs)
    path = tmp_path / "anim.gif"
    anim.save(str(path), writer=PillowWriter(fps=5), dpi=30)
    with Image.open(path) as gif:
        assert gif.n_frames == 3
    np.testing.assert_array_equal(anim._fig.axes[1].images[0].get_array(), qs[-1])
