"""The plotting package: every name the single-module ``nfutils.plotting`` offered still imports
from ``nfutils.plotting``; each submodule is short, documented and lists its public names; the
shared grid helpers agree with ``potentials.density_grid``."""

import ast
import importlib
from pathlib import Path

import numpy as np
import pytest
import torch

from nfutils import plotting, potentials

# The public top-level names of nfutils/plotting.py before it became a package (read from its
# source with ast: functions, classes and assignments not starting with "_").
OLD_PUBLIC_NAMES = [
    "Extent", "as_numpy", "square_extent", "density_on_grid", "histogram2d", "flow_histogram",
    "layer_indices", "plot_density", "plot_potential", "plot_layer_samples",
    "layer_samples_figure", "layer_extent", "plot_kl_curve", "plot_planar_layer", "figure3_grid",
    "plot_kl_against_length", "conditional_densities", "plot_conditional_pair",
    "conditional_pair_figure", "conditional_grid",
    "plot_amortization_gap", "conditional_animation", "DIGIT_COLORS", "plot_latent_codes",
    "decoded_manifold", "plot_manifold", "posterior_comparison_figure",
    "plot_learning_curves", "latent_decoder_figure", "tile_images", "plot_image_grid",
    "reconstructions_figure", "plot_bound_against_flow_length", "gap_split_figure",
]

SUBMODULES = ["common", "flows2d", "amortized", "latent_plane", "images"]
PACKAGE_DIR = Path(plotting.__file__).parent


@pytest.mark.parametrize("name", OLD_PUBLIC_NAMES)
def test_every_old_public_name_still_imports(name):
    assert hasattr(plotting, name)
    assert name in plotting.__all__
    exec(f"from nfutils.plotting import {name}", {})


def test_all_lists_every_public_def_of_every_submodule_once():
    listed = []
    for module_name in SUBMODULES:
        module = importlib.import_module(f"nfutils.plotting.{module_name}")
        tree = ast.parse(Path(module.__file__).read_text())
        defined = {node.name for node in tree.body
                   if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_")}
        assert defined <= set(module.__all__), f"{module_name}: not in __all__: {defined - set(module.__all__)}"
        for name in module.__all__:
            assert getattr(plotting, name) is getattr(module, name)
        listed += module.__all__
    assert len(listed) == len(set(listed)), "a name is defined in two submodules"
    assert sorted(listed) == sorted(plotting.__all__)


@pytest.mark.parametrize("path", sorted(PACKAGE_DIR.glob("*.py")), ids=lambda p: p.name)
def test_submodules_are_short_and_documented(path):
    source = path.read_text()
    assert len(source.splitlines()) <= 600
    assert ast.get_docstring(ast.parse(source)), f"{path.name} has no module docstring"


def test_cell_centres_are_those_of_potentials_density_grid():
    points, _ = potentials.density_grid((-1.0, 3.0, -2.0, 2.0), 8)
    z1, z2 = plotting.cell_centres((-1.0, 3.0, -2.0, 2.0), 8)
    np.testing.assert_allclose(z1, points[0, :, 0].numpy())
    np.testing.assert_allclose(z2, points[:, 0, 1].numpy())


def test_density_on_grid_normalize_integrates_to_one_and_keeps_the_shape():
    # exp(-U) of a Gaussian of standard deviation 0.5 whose energy is shifted by 800, so that
    # exp(-U) underflows in float64 unless the normalization happens in log space
    def energy(z):
        return 0.5 * (z**2).sum(-1) / 0.25 + 800.0

    density, cell_area = plotting.density_on_grid(lambda z: -energy(z), 4.0, 80, normalize=True)
    assert density.sum() * cell_area == pytest.approx(1.0, abs=1e-12)
    points, _ = potentials.density_grid(4.0, 80)
    closed_form = torch.exp(-0.5 * (points**2).sum(-1) / 0.25) / (2 * np.pi * 0.25)
    np.testing.assert_allclose(density, closed_form.numpy(), rtol=1e-6)


def test_posterior_pixels_sit_on_the_grid_points_of_the_contours():
    from types import SimpleNamespace

    resolution, extent = 11, (-1.0, 1.0, 0.0, 4.0)
    z1, z2 = np.linspace(-1.0, 1.0, resolution), np.linspace(0.0, 4.0, resolution)
    log_density = -0.5 * ((z1[None, :] - 0.2) ** 2 + (z2[:, None] - 2.0) ** 2) / 0.3
    grid = SimpleNamespace(extent=extent, log_posterior=log_density, log_q=log_density, kl=0.0)
    fig = plotting.posterior_comparison_figure([np.zeros(784)], {"K = 0": [grid]})
    ax = fig.posterior_axes[0, 0]
    xmin, xmax, ymin, ymax = ax.images[0].get_extent()
    pixel_z1 = xmin + (np.arange(resolution) + 0.5) * (xmax - xmin) / resolution
    pixel_z2 = ymin + (np.arange(resolution) + 0.5) * (ymax - ymin) / resolution
    np.testing.assert_allclose(pixel_z1, z1, atol=1e-12)
    np.testing.assert_allclose(pixel_z2, z2, atol=1e-12)
    assert len(ax.collections) > 0  # q's contour lines over p


def test_pyproject_ships_the_plotting_subpackage():
    """A non-editable install (the Colab setup cell) must contain nfutils.plotting: the package
    list in pyproject.toml is a pattern that setuptools resolves to every subpackage."""
    import tomllib

    from setuptools import find_packages

    root = PACKAGE_DIR.parent.parent
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    if "packages" in config and isinstance(config["packages"], list):
        shipped = set(config["packages"])
    else:
        shipped = set(find_packages(root, include=config["packages"]["find"]["include"]))
    assert {"nfutils", "nfutils.plotting"} <= shipped, shipped
