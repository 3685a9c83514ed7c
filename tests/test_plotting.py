"""Plotting: the pure figure functions of nfutils.plotting, checked against hand computations."""

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from nfutils import flows, plotting, potentials


def _axes():
    return Figure().subplots()


def test_square_extent_and_layer_indices():
    assert plotting.square_extent(2) == (-2.0, 2.0, -2.0, 2.0)
    assert plotting.square_extent((0, 1, -1, 3)) == (0.0, 1.0, -1.0, 3.0)
    with pytest.raises(ValueError):
        plotting.square_extent((1, 2))
    assert plotting.layer_indices(100) == [0, 1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert plotting.layer_indices(32) == [0, 1, 5, 10, 20, 30, 32]
    assert plotting.layer_indices(3) == [0, 1, 3]
    assert plotting.layer_indices(0) == [0]


def test_histogram2d_counts_points_in_the_right_cells():
    # 4 cells of side 1 on [-1, 1]^2; rows are z2, columns z1
    samples = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [5.0, 5.0]])
    density = plotting.histogram2d(samples, extent=1.0, bins=2)
    expected_counts = np.array([[1, 2], [0, 1]])  # [z2 < 0: z1 < 0, z1 > 0], [z2 > 0: ...]
    np.testing.assert_allclose(density, expected_counts / (5 * 1.0))
    # the point outside the box still counts in the total: mass inside = 4/5
    assert density.sum() * 1.0 == pytest.approx(0.8)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        plotting.histogram2d(np.zeros((3, 3)))


def test_density_on_grid_of_a_gaussian():
    gaussian = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64),
                                                      torch.eye(2, dtype=torch.float64))
    density, cell_area = plotting.density_on_grid(gaussian.log_prob, extent=6.0, resolution=121)
    assert density.shape == (121, 121)
    assert cell_area == pytest.approx((12 / 121) ** 2)
    assert density.sum() * cell_area == pytest.approx(1.0, abs=1e-6)
    assert density[60, 60] == pytest.approx(1 / (2 * math.pi), rel=1e-12)  # the centre cell


def test_flow_histogram_of_a_gaussian_flow_matches_its_density():
    model = flows.make_flow("planar", 2, 0)  # K = 0: q = N(0, I)
    generator = torch.Generator().manual_seed(0)
    hist = plotting.flow_histogram(model, num_samples=200_000, extent=3.0, bins=6,
                                   chunk_size=30_000, generator=generator)
    # exact mass of each 1x1 cell of N(0, I), divided by the cell area 1
    edges = np.arange(-3, 4)
    cdf = np.array([0.5 * (1 + math.erf(e / math.sqrt(2))) for e in edges])
    mass_1d = np.diff(cdf)
    np.testing.assert_allclose(hist, np.outer(mass_1d, mass_1d), atol=4e-3)


def test_plot_density_draws_the_array_and_checks_shape():
    ax = _axes()
    density = np.random.default_rng(0).random((5, 5))
    image = plotting.plot_density(ax, density, extent=2.0, title="t")
    np.testing.assert_array_equal(image.get_array(), density)
    assert image.get_extent() == [-2.0, 2.0, -2.0, 2.0]
    assert ax.get_title() == "t"
    with pytest.raises(ValueError, match=r"\(R, R\)"):
        plotting.plot_density(ax, np.zeros(5))


def test_plot_potential_is_exp_minus_U():
    ax = _axes()
    image = plotting.plot_potential(ax, potentials.U1, extent=4.0, resolution=40)
    points, _ = potentials.density_grid(4.0, 40)
    np.testing.assert_allclose(image.get_array(), torch.exp(-potentials.U1(points)).numpy())


def test_plot_layer_samples_positions_and_colours():
    ax = _axes()
    z = np.array([[0.0, 1.0], [2.0, -1.0], [0.5, 0.5]])
    colours = np.array([0.1, 0.2, 0.3])
    points = plotting.plot_layer_samples(ax, z, colours, extent=3.0)
    np.testing.assert_array_equal(points.get_offsets(), z)
    np.testing.assert_array_equal(points.get_array(), colours)
    assert ax.get_xlim() == (-3.0, 3.0)
    with pytest.raises(ValueError, match=r"\(3,\)"):
        plotting.plot_layer_samples(ax, z, colours[:2])


def test_layer_samples_figure_shows_the_requested_layers():
    model = flows.make_flow("planar", 2, 12)
    layers = model.sample_layers(50)
    colours = (layers[0] - model.mu.detach()).norm(dim=-1)
    fig = plotting.layer_samples_figure(layers, colours, ncols=4)
    shown = [ax for ax in fig.axes if ax.axison]
    assert len(shown) == len(plotting.layer_indices(12)) == 5  # 0, 1, 5, 10, 12
    np.testing.assert_allclose(shown[-1].collections[0].get_offsets(), layers[12].numpy())
    assert shown[-1].get_title() == "after layer 12"
    with pytest.raises(ValueError):
        plotting.layer_samples_figure(layers, colours, indices=[0, 13])


def test_plot_kl_curve_running_mean():
    ax = _axes()
    steps = np.arange(0, 1000, 100)
    kl = np.arange(10, dtype=float)
    line = plotting.plot_kl_curve(ax, steps, kl, label="U1", smooth=3)
    # running mean of 3 consecutive integers is the middle one
    np.testing.assert_allclose(line.get_ydata(), np.arange(1, 9))
    np.testing.assert_array_equal(line.get_xdata(), steps[2:])
    with pytest.raises(ValueError):
        plotting.plot_kl_curve(ax, steps, kl[:3])


def test_plot_planar_layer_verdict_and_exact_density():
    w, u, b = (1.0, 0.5), (0.8, -0.3), 0.2
    fig = plotting.plot_planar_layer(w, u, b, extent=3.0, resolution=30)
    w_dot_u = 1.0 * 0.8 + 0.5 * -0.3
    assert f"w.u = {w_dot_u:.2f}" in fig._suptitle.get_text()
    assert "(invertible)" in fig._suptitle.get_text()
    # the exact density after the layer against a histogram of pushed samples
    exact = fig.axes[3].images[0].get_array()
    generator = torch.Generator().manual_seed(1)
    z_0 = torch.randn(400_000, 2, generator=generator, dtype=torch.float64)
    pushed, _ = flows.planar_transform(z_0, torch.tensor(w, dtype=torch.float64),
                                       torch.tensor(u, dtype=torch.float64), b)
    hist = plotting.histogram2d(pushed, 3.0, 30)
    assert np.abs(exact - hist).max() < 0.015
    assert exact.max() > 0.05

    folding = plotting.plot_planar_layer((1.0, 0.0), (-3.0, 0.0), 0.0, resolution=20)
    assert "NOT invertible" in folding._suptitle.get_text()
    assert "histogram" in folding.axes[3].get_title()
    fixed = plotting.plot_planar_layer((1.0, 0.0), (-3.0, 0.0), 0.0, constrain=True, resolution=20)
    u_hat = flows.constrain_u(torch.tensor([1.0, 0.0]), torch.tensor([-3.0, 0.0]))
    assert f"w.u_hat = {float(u_hat[0]):.2f}" in fixed._suptitle.get_text()
    assert "(invertible)" in fixed._suptitle.get_text()


def test_figure3_grid_layout_and_kl_labels():
    target = {"U1": np.ones((4, 4)), "U2": np.ones((4, 4))}
    panels = {(n, kind, K): (np.full((4, 4), K), 0.1 * K)
              for n in target for kind in ("planar", "radial") for K in (2, 8)}
    fig = plotting.figure3_grid(target, panels, flow_lengths=(2, 8))
    assert len(fig.axes) == 2 * 5
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts.count("KL 0.80") == 4 and texts.count("KL 0.20") == 4
    assert fig.axes[1].get_title() == "planar K=2"
    del panels[("U2", "radial", 8)]
    with pytest.raises(ValueError, match="no panel"):
        plotting.figure3_grid(target, panels, flow_lengths=(2, 8))


def test_plot_kl_against_length_draws_one_line_per_potential_and_kind():
    ax = _axes()
    kl = {("U1", "planar"): [0.5, 0.2, 0.05], ("U1", "nice"): [0.9, 0.6, 0.3],
          ("U2", "planar"): [0.4, 0.1, 0.02]}
    lines = plotting.plot_kl_against_length(ax, [2, 8, 32], kl)
    assert len(lines) == 3
    assert list(lines[1].get_ydata()) == [0.9, 0.6, 0.3] and list(lines[1].get_xdata()) == [2, 8, 32]
    assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color()
    assert lines[0].get_linestyle() == "-" and lines[1].get_linestyle() == "--"
    with pytest.raises(ValueError, match="2 KL values for 3 flow lengths"):
        plotting.plot_kl_against_length(_axes(), [2, 8, 32], {("U1", "nice"): [1.0, 2.0]})


def test_layer_extent_covers_the_samples_of_every_layer():
    layers = [torch.zeros(1000, 2), torch.full((1000, 2), 6.3), torch.ones(1000, 2)]
    assert plotting.layer_extent(layers) == 7.0
    assert plotting.layer_extent([torch.zeros(10, 2)]) == 4.0
