"""The exercises stay checkable: every worked solution in solutions/ passes its check helper, and
the helpers say wrong to wrong answers and "not attempted" to none (nfutils/exercises.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from nfutils import exercises, potentials

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"


def _solution(stem: str):
    spec = importlib.util.spec_from_file_location(f"solution_{stem}", SOLUTIONS / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def log_Z_U1() -> float:
    return potentials.log_partition(potentials.U1, extent=6.0, resolution=1000)


def test_every_notebook_has_a_solutions_file():
    for notebook in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")):
        assert (SOLUTIONS / f"{notebook.stem}.py").exists(), f"solutions/{notebook.stem}.py is missing"


def test_part1_solutions_are_right():
    part1 = _solution("01_planar_flows_2d")
    assert exercises.check_radial_log_det(part1.my_radial_log_det) is True
    assert exercises.check_critical_t(part1.t_star) is True


@pytest.mark.slow
def test_part1_own_potential_solution_is_right():
    part1 = _solution("01_planar_flows_2d")
    assert exercises.check_fit(part1.my_model(), part1.my_U) is True


def test_part2_period_solution_is_right():
    assert exercises.check_period_features(_solution("02_amortized_flows").my_features) is True


@pytest.mark.slow
def test_part2_quadrature_kl_solution_is_right(log_Z_U1):
    part2 = _solution("02_amortized_flows")
    amortizer = part2.notebook_amortizer(log_Z_U1)
    assert exercises.check_amortized_kl(part2.my_kl(amortizer, log_Z_U1), amortizer, log_Z_U1) is True
    assert exercises.check_amortized_kl(part2.my_kl(amortizer, log_Z_U1) + 0.5, amortizer, log_Z_U1) is False


@pytest.mark.slow
def test_part2_two_lobes_solution_is_right(log_Z_U1):
    assert exercises.check_two_lobes(_solution("02_amortized_flows").my_flow(), log_Z_U1) is True


@pytest.mark.slow
def test_part3_solutions_are_right():
    from nfutils import vae_training

    part3 = _solution("03_vae_2d_latent")
    image = torch.bernoulli(torch.full((1, 784), 0.2), generator=torch.Generator().manual_seed(0))
    model_k0, _ = vae_training.load_vae(part3.CHECKPOINTS / "vae2d_K0.pt")
    model_k16, _ = vae_training.load_vae(part3.CHECKPOINTS / "vae2d_K16.pt")
    value = part3.my_closed_form_kl(model_k0, image)
    assert exercises.check_closed_form_kl(value, model_k0, image) is True
    assert exercises.check_closed_form_kl(value / 2, model_k0, image) is False
    kl, log_px = part3.my_posterior_kl(model_k16, image)
    assert exercises.check_posterior_kl(kl, model_k16, image, log_px) is True
    assert exercises.check_posterior_kl(kl + 1.0, model_k16, image, log_px) is False


def test_part4_solutions_are_right():
    part4 = _solution("04_vae_40d_latent")
    assert exercises.check_encoder_outputs(part4.my_count) is True
    assert exercises.check_log_mean_exp(part4.my_log_mean_exp) is True
    assert exercises.check_elbo_below_estimate(part4.my_answer) is True


def test_helpers_say_wrong_and_not_attempted(capsys):
    assert exercises.check_period_features(lambda theta: torch.stack([theta.cos(), theta.sin()], -1)) is False
    assert exercises.check_period_features(lambda theta: 1 / 0) is False  # reports, does not raise
    assert exercises.check_critical_t(0.0) is False
    assert exercises.check_radial_log_det(lambda z, z0, alpha, beta: torch.zeros(z.shape[0])) is False
    assert exercises.check_encoder_outputs(2 * 40 + 40 * 80) is False
    assert exercises.check_log_mean_exp(lambda log_w: log_w.mean()) is False  # the ELBO, not log-mean-exp
    assert exercises.check_elbo_below_estimate(False) is False
    # exp(-U) = exp(-0.05 |z|^2) still holds exp(-1.8) = 0.17 of its peak at |z| = 6: not normalizable
    # on [-6, 6]^2, so wrong before any model is looked at
    with pytest.warns(UserWarning):
        assert exercises.check_fit(object(), energy=lambda z: 0.05 * (z**2).sum(-1)) is False
    assert exercises.check_fit(None, energy=None) is None
    for helper in (exercises.check_period_features, exercises.check_critical_t, exercises.check_radial_log_det,
                   exercises.check_encoder_outputs, exercises.check_log_mean_exp, exercises.check_elbo_below_estimate):
        assert helper(None) is None
    lines = capsys.readouterr().out.splitlines()
    assert all(line.startswith(("right", "wrong", "not yet", "not quite", "not attempted yet")) for line in lines), lines
    assert not any(line.startswith("right") for line in lines), lines
