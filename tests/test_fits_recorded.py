"""Every fit gives, to the last bit, what it gave before its loop was restructured.

The numbers below were computed with the library as it was before ``fit_flow``,
``fit_amortized``, ``fit_vae`` and ``fit_local_posteriors`` became short functions over the one
loop (``training.run_steps`` with its ``Checkpoint``), on tiny problems with fixed seeds. The
restructured code reproduced them bit for bit on the machine that recorded them; the check
allows a relative 1e-6 so that a CPU with other vector instructions passes too. A changed order
of random draws (the shuffles, the binarization, the posterior noise, the conditions) would
move every number here by far more. The resumed runs must equal the uninterrupted ones exactly.
"""

import math

import pytest
import torch

from nfutils import flows, local_posteriors, potentials, training, vae_training
from nfutils.amortized import AmortizedPlanarFlow, fit_amortized, ring_energy
from nfutils.vae import VAE

RECORDED = {
    "flow_free_energy": [7.137852191925049, 5.221616268157959, 5.052338123321533, 5.603591442108154],
    "flow_parameter_sums": [-0.009231370408087969, 0.12988517433404922, -1.1564089953899384, -0.018289748579263687, -0.006842134986072779],
    "amortized_free_energy": [6.335605621337891, 7.139873504638672, 3.9947779178619385, 4.144032001495361, 5.418029308319092],
    "amortized_parameter_sums": [0.45480853505432606, -0.016995370388031006, 0.37334294570609927, -0.04399743676185608, -0.2224878940032795, 0.48200289043597877],
    "vae_train_elbo": [-8.469061374664307, -8.477181911468506, -8.574044704437256, -8.872820377349854, -8.549978256225586, -8.494186401367188, -8.31091833114624, -8.637951374053955, -8.497316360473633, -8.374489784240723],
    "vae_test_elbo": [-8.581321716308594, -8.517264774867467, -8.43538338797433, -8.418455941336495],
    "vae_epoch_max_grad_norm": [2.7865381240844727, 5.944778919219971, 3.0350964069366455, 3.96563720703125],
    "vae_epoch_clipped_steps": [3, 3, 4, 5],
    "vae_parameter_sums": [-0.42578288563527167, 0.948003351688385, 0.15740276547148824, 0.09327329706866294, 0.5678704595193267, -0.1352302893064916, -2.879381589591503, 0.5602264273911715, -1.2954602934187278, 0.15033987909555435],
    "local_elbo_identity": [-8.57771954536438, -7.997505640983581, -9.111723852157592],
    "local_elbo_averaged": [-8.577687549591065, -7.997557163238525, -9.111572790145875],
    "local_elbo_encoder": [-8.563204097747803, -7.9919328689575195, -9.103688669204711],
}


def close(values, recorded):
    return pytest.approx(recorded, rel=1e-6, abs=1e-9) == values


def parameter_sums(module):
    return [float(p.detach().double().sum()) for p in module.parameters()]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_fit_flow_as_recorded():
    torch.manual_seed(0)
    model = flows.NormalizingFlow(2, flows.PlanarFlow(2, 4, init_scale=0.01))
    history = training.fit_flow(model, potentials.U1, num_steps=30, num_samples=50, lr=2e-3,
                                anneal=True, anneal_steps=20, log_Z=1.5, log_every=10,
                                generator=torch.Generator().manual_seed(1))
    assert close(history.free_energy, RECORDED["flow_free_energy"])
    assert close(history.kl, [value + 1.5 for value in RECORDED["flow_free_energy"]])
    assert close(parameter_sums(model), RECORDED["flow_parameter_sums"])


def _amortized(path=None, stop_at_call=None):
    torch.manual_seed(2)
    model = AmortizedPlanarFlow(2, 3, hidden=8)
    calls = {"n": 0}

    def sample_conditions(count, generator):
        calls["n"] += 1
        if calls["n"] == stop_at_call:
            raise KeyboardInterrupt  # an interruption between two checkpoints
        return (torch.rand(count, 1, generator=generator) * 2 - 1) * math.pi

    history = fit_amortized(model, ring_energy, sample_conditions, num_steps=20,
                            conditions_per_step=4, samples_per_condition=8, log_every=5,
                            generator=torch.Generator().manual_seed(3), checkpoint_path=path,
                            checkpoint_every=5)
    return history, model


def test_fit_amortized_as_recorded_and_resumed(tmp_path):
    history, model = _amortized()
    assert close(history.free_energy, RECORDED["amortized_free_energy"])
    assert close(parameter_sums(model), RECORDED["amortized_parameter_sums"])
    with pytest.raises(KeyboardInterrupt):
        _amortized(tmp_path / "a.pt", stop_at_call=13)
    resumed, resumed_model = _amortized(tmp_path / "a.pt")
    assert resumed.resumed_from == [10]
    assert resumed.free_energy == history.free_energy
    assert parameter_sums(resumed_model) == parameter_sums(model)


def _vae(path=None, stop_at=None):
    generator = torch.Generator().manual_seed(4)
    train = torch.rand(30, 12, generator=generator)
    test = torch.bernoulli(torch.rand(7, 12, generator=generator), generator=generator)
    torch.manual_seed(5)
    model = VAE(latent_dim=2, flow_length=2, hidden=6, num_hidden_layers=1, data_dim=12)

    def stop(step, elbo):
        if step == stop_at:
            raise KeyboardInterrupt

    history = vae_training.fit_vae(
        model, train, test, num_epochs=4, batch_size=7, num_samples=2, lr=1e-2, anneal_steps=6,
        checkpoint_path=path, checkpoint_every=3, seed=6, eval_samples=2, log_every=2,
        progress=False, callback=stop, max_grad_norm=2.0,
        lr_schedule=lambda step: training.warmup_cosine(step, 20, 2))
    return history, model


def test_fit_vae_as_recorded_and_resumed(tmp_path):
    history, model = _vae()
    assert close(history.train_elbo, RECORDED["vae_train_elbo"])
    assert close(history.test_elbo, RECORDED["vae_test_elbo"])
    assert close(history.epoch_max_grad_norm, RECORDED["vae_epoch_max_grad_norm"])
    assert history.epoch_clipped_steps == RECORDED["vae_epoch_clipped_steps"]
    assert close(parameter_sums(model), RECORDED["vae_parameter_sums"])
    with pytest.raises(KeyboardInterrupt):
        _vae(tmp_path / "v.pt", stop_at=8)
    resumed, resumed_model = _vae(tmp_path / "v.pt")
    assert resumed.resumed_from == [6]
    assert resumed.train_elbo == history.train_elbo and resumed.test_elbo == history.test_elbo
    assert parameter_sums(resumed_model) == parameter_sums(model)


@pytest.mark.parametrize("name, options", [
    ("identity", {}), ("averaged", {"average_fraction": 0.3}),
    ("encoder", {"standardized": True, "flow_start": "encoder"})])
def test_fit_local_posteriors_as_recorded(name, options):
    generator = torch.Generator().manual_seed(4)
    torch.rand(30, 12, generator=generator)  # the draws of _vae's data, so x is the same
    x = torch.bernoulli(torch.rand(7, 12, generator=generator), generator=generator)[:3]
    torch.manual_seed(7)
    decoder_model = VAE(latent_dim=3, flow_length=2, hidden=6, num_hidden_layers=1, data_dim=12)
    q = local_posteriors.fit_local_posteriors(decoder_model, x, 2, num_steps=15, num_samples=3,
                                              warmup_steps=4,
                                              generator=torch.Generator().manual_seed(8), **options)
    elbo = local_posteriors.local_elbo(decoder_model, q, x, 20,
                                       generator=torch.Generator().manual_seed(9))
    assert close(elbo.tolist(), RECORDED[f"local_elbo_{name}"])
