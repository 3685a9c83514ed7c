"""Figures of a 2-D latent (nfutils/plotting/latent_plane.py) and the latent slider (nfutils.widgets)."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from nfutils import plotting, vae, widgets


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return vae.VAE(latent_dim=2, flow_length=2, hidden=16).eval()


def test_plot_latent_codes_draws_every_point_with_its_digit_colour():
    fig = Figure()
    ax = fig.subplots()
    z = np.random.default_rng(0).normal(size=(50, 2))
    labels = np.arange(50) % 10
    points = plotting.plot_latent_codes(ax, z, labels, extent=3.0)
    np.testing.assert_array_equal(points.get_offsets(), z)
    np.testing.assert_array_equal(points.get_array(), labels)
    assert ax.get_xlim() == (-3.0, 3.0) and len(ax.get_legend().get_texts()) == 10
    # legend colours are the scatter's colours for the same digit
    scatter_colour = points.to_rgba(np.array([3]))[0]
    legend_colour = ax.get_legend().legend_handles[3].get_color()
    np.testing.assert_allclose(matplotlib.colors.to_rgba(legend_colour), scatter_colour)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        plotting.plot_latent_codes(ax, z[:, :1], labels)


def test_decoded_manifold_tiles_are_the_decoder_means_at_the_right_points(model):
    image = plotting.decoded_manifold(model, num_per_side=3, extent=2.0)
    assert image.shape == (84, 84) and 0 <= image.min() and image.max() <= 1
    # the tile in row 0 (top), column 2 shows z = (z1 = 2, z2 = 2)
    with torch.no_grad():
        expected = torch.sigmoid(model.decode(torch.tensor([[2.0, 2.0]]))).reshape(28, 28)
    np.testing.assert_allclose(image[:28, 56:], expected.numpy(), atol=1e-6)
    with torch.no_grad():
        bottom_left = torch.sigmoid(model.decode(torch.tensor([[-2.0, -2.0]]))).reshape(28, 28)
    np.testing.assert_allclose(image[56:, :28], bottom_left.numpy(), atol=1e-6)


def test_plot_manifold_centres_each_tile_on_its_latent_point(model):
    image = plotting.decoded_manifold(model, num_per_side=3, extent=2.0)
    artist = plotting.plot_manifold(Figure().subplots(), image, extent=2.0)
    xmin, xmax, ymin, ymax = artist.get_extent()
    tile_centres_z1 = xmin + (np.arange(3) + 0.5) * (xmax - xmin) / 3
    tile_centres_z2 = ymin + (np.arange(3) + 0.5) * (ymax - ymin) / 3
    np.testing.assert_allclose(tile_centres_z1, [-2.0, 0.0, 2.0], atol=1e-12)
    np.testing.assert_allclose(tile_centres_z2, [-2.0, 0.0, 2.0], atol=1e-12)


def test_posterior_comparison_figure_shares_the_scale_per_row_and_has_a_colour_bar():
    x = torch.bernoulli(torch.full((2, 784), 0.2), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    models = {"K = 0": vae.VAE(2, 0, hidden=8), "K = 2": vae.VAE(2, 2, hidden=8)}
    grids = {name: vae.grid_posterior(m, x, resolution=30, coarse_resolution=41) for name, m in models.items()}
    fig = plotting.posterior_comparison_figure(list(x), grids)
    assert len(fig.axes) == 2 * 3 + 1  # per row: the digit and two posteriors; one colour bar
    assert "maximum" in fig.axes[-1].get_ylabel()
    panels = fig.posterior_axes
    for row in range(2):
        widths = [np.diff(ax.get_xlim())[0] for ax in panels[row]] + [np.diff(ax.get_ylim())[0] for ax in panels[row]]
        np.testing.assert_allclose(widths, widths[0])  # square windows of one size per row
        for j, (name, rows) in enumerate(grids.items()):
            ax = panels[row, j]
            assert ax.get_title() == f"{name}: KL(q || p) = {rows[row].kl:.2f} nats"
            assert ax.images[0].get_array().max() == 1.0  # p relative to its maximum
            assert len(ax.collections) > 0  # q's contour lines
            grid = rows[row]  # the window shows the posterior's mode
            resolution = grid.log_posterior.shape[0]
            i2, i1 = np.unravel_index(int(grid.log_posterior.argmax()), grid.log_posterior.shape)
            mode = (np.linspace(*grid.extent[:2], resolution)[i1], np.linspace(*grid.extent[2:], resolution)[i2])
            assert ax.get_xlim()[0] <= mode[0] <= ax.get_xlim()[1]
            assert ax.get_ylim()[0] <= mode[1] <= ax.get_ylim()[1]
    with pytest.raises(ValueError, match="one grid per image"):
        plotting.posterior_comparison_figure(list(x) * 2, grids)


def test_plot_learning_curves_mean_and_band():
    fig = Figure()
    ax = fig.subplots()
    values = np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0], [2.0, 3.0, 7.0]])
    line = plotting.plot_learning_curves(ax, [1, 2, 3], values, "K = 0")
    np.testing.assert_allclose(line.get_ydata(), [2.0, 3.0, 5.0])
    band = ax.collections[0].get_paths()[0].vertices
    assert band[:, 1].min() == 1.0 and band[:, 1].max() == 7.0
    assert line.get_label() == "K = 0 (3 seeds)"
    with pytest.raises(ValueError, match=r"\(n_seeds, 2\)"):
        plotting.plot_learning_curves(ax, [1, 2], values, "bad")


def test_latent_decoder_figure_and_slider_redraw_the_decoded_digit(model):
    fig = plotting.latent_decoder_figure(model, 0.5, -1.0, extent=3.0)
    with torch.no_grad():
        expected = torch.sigmoid(model.decode(torch.tensor([[0.5, -1.0]]))).reshape(28, 28)
    np.testing.assert_allclose(fig.decoded, expected.numpy(), atol=1e-6)

    torch.manual_seed(2)
    other = vae.VAE(latent_dim=2, flow_length=0, hidden=16).eval()
    codes = {"A": (np.zeros((5, 2)), np.arange(5))}
    slider = widgets.latent_slider({"A": model, "B": other}, codes)
    first = slider.result
    assert isinstance(first, Figure) and first.axes[0].get_title() == "z = (0.00, 0.00)"
    assert len(first.axes[0].collections) == 1  # model A's codes are drawn
    controls = {c.description: c for c in slider.children if hasattr(c, "description")}
    controls["z1"].value = 1.5
    moved = slider.result
    assert moved.axes[0].get_title() == "z = (1.50, 0.00)"
    assert not np.allclose(moved.decoded, first.decoded)
    controls["model"].value = "B"
    with torch.no_grad():
        expected_b = torch.sigmoid(other.decode(torch.tensor([[1.5, 0.0]]))).reshape(28, 28)
    np.testing.assert_allclose(slider.result.decoded, expected_b.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="2-D latent"):
        plotting.latent_decoder_figure(vae.VAE(latent_dim=3, hidden=4), 0.0, 0.0)


def test_gap_split_figure_stacks_the_mean_gaps():
    from nfutils.inference_gaps import InferenceGaps

    rng = np.random.default_rng(0)
    gaps = {}
    for name, shift in (("K = 0", 1.0), ("K = 16", 2.0)):
        log_px = torch.tensor(rng.normal(-130, 5, 50))
        elbo_best = log_px - torch.tensor(rng.exponential(shift, 50))
        gaps[name] = InferenceGaps(log_px, elbo_best - torch.tensor(rng.exponential(0.5, 50)), elbo_best)
    fig = plotting.gap_split_figure(gaps)
    ax_bars, ax_cdf = fig.axes
    heights = [patch.get_height() for patch in ax_bars.patches]
    expected = [float(gaps[n].approximation.mean()) if i == 0 else float(gaps[n].amortization.mean())
                for n in gaps for i in range(2)]
    np.testing.assert_allclose(heights, expected)
    assert len(ax_cdf.get_lines()) == 4
    with pytest.raises(ValueError):
        plotting.gap_split_figure({})
