"""nfutils.training: the one loop (``run_steps``), the one ``History``, schedules, ``fit_flow``;
and Part 2's code never importing the VAE's."""

import ast
import math
from pathlib import Path

import pytest
import torch

from nfutils import training
from nfutils.kl import flow_kl
from nfutils.training import History, NonFiniteLossError

NFUTILS = Path(__file__).resolve().parent.parent / "nfutils"


def _nfutils_imports(module: str) -> set[str]:
    """The nfutils modules ``module`` imports, directly or through other nfutils modules."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = NFUTILS / f"{name}.py"
        if not path.exists():
            path = NFUTILS / name / "__init__.py"
        if not path.exists():
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 1:
                if node.module:
                    todo.append(node.module.split(".")[0])
                else:
                    todo.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nfutils."):
                todo.append(node.module.split(".")[1])
    return seen - {module}


def test_part2_code_does_not_depend_on_the_vae():
    for module in ("training", "amortized", "checkpoints", "kl"):
        reached = _nfutils_imports(module)
        assert not reached & {"vae", "vae_training", "local_posteriors", "inference_gaps"}, (
            module, sorted(reached))
    assert "vae" in _nfutils_imports("vae_training")  # the walk does find an import


def test_no_private_names_are_imported_from_other_training_modules():
    for module in ("amortized", "vae_training", "local_posteriors", "inference_gaps"):
        tree = ast.parse((NFUTILS / f"{module}.py").read_text())
        private = [alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                   and node.module in ("training", "checkpoints", "vae", "vae_training", "kl")
                   for alias in node.names if alias.name.startswith("_")]
        assert not private, (module, private)


def test_history_round_trips_and_reads_old_dicts():
    history = History(steps=[0, 10], free_energy=[1.5, 0.5], lr=[1e-3, 5e-4], seconds=2.0,
                      resumed_from=[10], finished=True)
    assert History.from_dict(history.as_dict()) == history
    # a VAE history as committed (no free_energy, kl, lr)
    old_vae = {"steps": [100], "train_elbo": [-150.0], "epochs": [1], "epoch_train_elbo": [-160.0],
               "test_elbo": [-155.0], "seconds": 3.5, "resumed_from": [], "finished": True}
    loaded = History.from_dict(old_vae)
    assert loaded.test_elbo == [-155.0] and loaded.finished and loaded.free_energy == []
    assert loaded.setting_changes == [] and loaded.epoch_max_grad_norm == []


def _quadratic_problem():
    """Minimize ||p - target||^2 by SGD: each step's update is known in closed form."""
    target = torch.tensor([1.0, -2.0])
    model = torch.nn.Linear(1, 2)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
    return model, target, lambda step: ((model.bias - target) ** 2).sum()


def test_run_steps_follows_the_schedule_clips_and_records():
    model, target, loss = _quadratic_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []
    history = training.run_steps(
        model, optimizer, loss, History(), num_steps=4, lr=0.1,
        lr_factor=lambda t: 1.0 / (t + 1), max_grad_norm=0.5,
        after_step=lambda t, value, norm: seen.append((t, float(value), norm,
                                                       optimizer.param_groups[0]["lr"])))
    assert history.finished and [row[0] for row in seen] == [0, 1, 2, 3]
    # replay by hand: gradient 2 (p - target), clipped to norm 0.5, step lr 0.1 / (t + 1)
    p = torch.zeros(2)
    for t, value, norm, lr in seen:
        grad = 2 * (p - target)
        assert value == pytest.approx(float(((p - target) ** 2).sum()))
        assert norm == pytest.approx(float(grad.norm()), rel=1e-6)
        assert lr == pytest.approx(0.1 / (t + 1))
        p = p - lr * grad * min(1.0, 0.5 / float(grad.norm()))
    assert torch.allclose(model.bias.detach(), p, atol=1e-6)


def _recording_checkpoint(path, saved):
    """A ``Checkpoint`` at ``path`` that also appends the step of every save to ``saved``."""
    return training.Checkpoint(path, extra=lambda done: saved.append(done) or {})


def test_run_steps_saves_on_schedule_and_never_a_nan_state(tmp_path):
    model, target, loss = _quadratic_problem()
    saved = []
    training.run_steps(model, torch.optim.SGD(model.parameters(), lr=0.1), loss, History(),
                       num_steps=7, lr=0.1, checkpoint_every=3,
                       checkpoint=_recording_checkpoint(tmp_path / "a.pt", saved))
    assert saved == [3, 6, 7]
    # an update that makes a parameter NaN on a checkpoint step is not saved
    model, target, loss = _quadratic_problem()
    backward_calls = []

    def ruin_second_update(grad):
        backward_calls.append(1)
        return grad * float("nan") if len(backward_calls) == 2 else grad

    model.bias.register_hook(ruin_second_update)
    saved = []
    with pytest.raises(NonFiniteLossError, match="parameter bias .*update of step 1"):
        training.run_steps(model, torch.optim.SGD(model.parameters(), lr=0.1), loss, History(),
                           num_steps=7, lr=0.1, checkpoint_every=1,
                           checkpoint=_recording_checkpoint(tmp_path / "b.pt", saved))
    assert saved == [1]  # the state after step 1's update was never saved


def test_run_steps_stops_at_the_time_budget_and_resumes(tmp_path):
    model, target, loss = _quadratic_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    saved = []
    checkpoint = _recording_checkpoint(tmp_path / "run.pt", saved)
    history = training.run_steps(model, optimizer, loss, History(), num_steps=5, lr=0.1,
                                 time_budget=0.0, checkpoint=checkpoint)
    assert not history.finished and saved == [1]
    history = training.run_steps(model, optimizer, loss, History(), num_steps=5, lr=0.1,
                                 checkpoint=checkpoint)
    assert history.finished and saved == [1, 5] and history.resumed_from == [1]
    assert torch.allclose(model.bias.detach(), target * (1 - 0.8**5), atol=1e-6)

def test_warmup_cosine_schedule_against_its_formula():
    total, warmup = 1000, 100
    values = [training.warmup_cosine(t, total, warmup) for t in range(total + 5)]
    assert values[0] == pytest.approx(1 / warmup) and values[warmup - 1] == pytest.approx(1.0)
    assert values[warmup] == pytest.approx(1.0)
    assert values[warmup + (total - warmup) // 2] == pytest.approx(0.5)
    assert values[total - 1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 899 / 900)))
    assert values[total:] == [0.0] * 5
    assert all(a <= b for a, b in zip(values[:warmup], values[1:warmup]))  # rising warm-up
    assert all(a >= b for a, b in zip(values[warmup:], values[warmup + 1:]))  # then falling
    assert training.warmup_cosine(0, 10) == 1.0  # no warm-up
    for bad in [(0, 0, 0), (0, 10, 10), (0, 10, -1)]:
        with pytest.raises(ValueError, match="warmup_steps"):
            training.warmup_cosine(*bad)


# ---------------------------------------------------------------- fit_flow and kl_estimate


def gaussian_target(mean=(1.0, -0.5), std=(0.5, 2.0)):
    """U(z) = sum_j (z_j - m_j)^2 / (2 s_j^2), with log Z = sum_j log(sqrt(2 pi) s_j)."""
    mean_t, std_t = torch.tensor(mean), torch.tensor(std)

    def U(z):
        return (0.5 * ((z - mean_t) / std_t) ** 2).sum(-1)

    log_Z = float(sum(math.log(math.sqrt(2 * math.pi) * s) for s in std))
    return U, log_Z, mean_t, std_t


def test_fit_flow_learns_a_gaussian_target_and_records_its_history():
    from nfutils.flows import make_flow

    U, log_Z, mean, std = gaussian_target()
    model = make_flow("planar", 2, 2)
    history = training.fit_flow(model, U, num_steps=200, num_samples=100, lr=5e-2, log_Z=log_Z,
                                log_every=100, generator=torch.Generator().manual_seed(0))
    assert history.steps == [0, 100, 199]
    assert len(history.free_energy) == len(history.kl) == 3
    assert history.kl[0] == pytest.approx(history.free_energy[0] + log_Z)
    assert history.kl[-1] < 0.05 < history.kl[0]
    assert torch.allclose(model.mu.detach(), mean, atol=0.2)
    kl, _ = flow_kl(model, U, log_Z, num_samples=5000)
    assert kl < 0.05
    # annealing: F is still recorded at beta = 1
    annealed = training.fit_flow(make_flow("planar", 2, 2), U, num_steps=3, num_samples=50,
                                 anneal=True, anneal_steps=10, log_every=1)
    assert annealed.steps == [0, 1, 2] and not annealed.kl


@pytest.mark.parametrize("bad", [dict(num_steps=-5), dict(num_steps=0), dict(log_every=0),
                                 dict(anneal_steps=0), dict(num_samples=0)])
def test_fit_flow_refuses_counts_below_one(bad):
    from nfutils.flows import make_flow

    U, *_ = gaussian_target()
    name = next(iter(bad))
    with pytest.raises(ValueError, match=f"{name} must be an integer >= 1"):
        training.fit_flow(make_flow("planar", 2, 1), U, **{"num_steps": 2, **bad})


def test_fit_flow_stops_on_a_nan_loss():
    from nfutils.flows import make_flow

    def U_nan(z):
        return torch.full(z.shape[:-1], float("nan"))

    with pytest.raises(NonFiniteLossError, match="step 0"):
        training.fit_flow(make_flow("planar", 2, 1), U_nan, num_steps=3, num_samples=10)
