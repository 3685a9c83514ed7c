"""nfutils.training's VAE loop: checkpoints (atomic, weights_only, clear errors), resume after a
SIGKILL giving the same parameters as an uninterrupted run, time budgets, NaN stop."""

import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from nfutils import training
from nfutils.training import (
    CheckpointError,
    NonFiniteLossError,
    fit_vae,
    load_checkpoint,
    load_vae,
    make_optimizer,
    save_checkpoint,
    save_vae,
)
from nfutils.vae import VAE, bound

DATA_DIM = 12
# tiny problem: 40 grey-level "images" of 12 pixels, batch 10 -> 4 steps per epoch
SETUP = dict(latent_dim=2, flow_length=2, hidden=8, data_dim=DATA_DIM)
FIT = dict(num_epochs=3, batch_size=10, num_samples=2, lr=3e-3, anneal_steps=20, seed=7,
           log_every=2, progress=False)


def tiny_data():
    generator = torch.Generator().manual_seed(0)
    train = torch.rand(40, DATA_DIM, generator=generator)
    test = torch.bernoulli(torch.rand(15, DATA_DIM, generator=generator), generator=generator)
    return train, test


def new_model():
    torch.manual_seed(1)
    return VAE(**SETUP)


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def assert_same_parameters(a, b):
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), f"{name} differs"


def test_fit_records_history_and_improves_the_bound(one_thread, tmp_path):
    train, test = tiny_data()
    model = new_model()
    with torch.no_grad():
        before = float(bound(model, test, 50, generator=torch.Generator().manual_seed(0)).elbo.mean())
    history = fit_vae(model, train, test, **{**FIT, "num_epochs": 6, "anneal": False},
                      checkpoint_path=tmp_path / "run.pt")
    with torch.no_grad():
        after = float(bound(model, test, 50, generator=torch.Generator().manual_seed(0)).elbo.mean())
    assert history.finished and history.epochs == [1, 2, 3, 4, 5, 6]
    assert len(history.test_elbo) == 6 and all(math.isfinite(v) for v in history.test_elbo)
    assert history.steps == list(range(2, 25, 2)) and len(history.train_elbo) == 12
    assert after > before
    state = load_checkpoint(tmp_path / "run.pt")
    assert state["step"] == 24 and state["history"]["finished"]
    assert not list(tmp_path.glob("*.partial")), "temp files must be renamed or removed"


def test_time_budget_stops_with_a_checkpoint_and_resumes_to_the_same_result(one_thread, tmp_path):
    train, test = tiny_data()
    reference = new_model()
    fit_vae(reference, train, test, **FIT)
    model = new_model()
    path = tmp_path / "chunked.pt"
    history = fit_vae(model, train, test, **FIT, checkpoint_path=path, time_budget=0.0)
    assert not history.finished and load_checkpoint(path)["step"] == 1
    pieces = 1
    while not history.finished:
        model = new_model()  # a fresh process would start from a fresh model
        history = fit_vae(model, train, test, **FIT, checkpoint_path=path, time_budget=0.0)
        pieces += 1
    assert pieces == 12 and history.resumed_from == list(range(1, 12))
    assert_same_parameters(model, reference)


CHILD = textwrap.dedent("""
    import sys, time, torch
    sys.path.insert(0, {tests_dir!r})
    from test_training import FIT, new_model, tiny_data
    from nfutils.training import fit_vae
    torch.set_num_threads(1)
    train, test = tiny_data()
    slow = {slow!r}
    fit_vae(new_model(), train, test, **FIT, checkpoint_path={path!r}, checkpoint_every=3,
            callback=(lambda step, elbo: time.sleep(0.1)) if slow else None)
""")


def test_resume_after_sigkill_matches_an_uninterrupted_run(one_thread, tmp_path):
    train, test = tiny_data()
    path = tmp_path / "killed.pt"
    script = tmp_path / "child.py"
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    script.write_text(CHILD.format(tests_dir=tests_dir, path=str(path), slow=True))
    child = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not path.exists():
        assert child.poll() is None, child.stderr.read().decode()
        assert time.monotonic() < deadline, "the child never wrote a checkpoint"
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(path)["step"]
    assert 3 <= killed_at < 12 and killed_at % 3 == 0

    resumed = new_model()
    history = fit_vae(resumed, train, test, **FIT, checkpoint_path=path, checkpoint_every=3)
    assert history.resumed_from == [killed_at] and history.finished

    reference = new_model()
    reference_history = fit_vae(reference, train, test, **FIT)
    assert_same_parameters(resumed, reference)
    assert history.train_elbo == reference_history.train_elbo
    assert history.test_elbo == reference_history.test_elbo


def test_missing_and_corrupt_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*nothing.pt"):
        load_checkpoint(tmp_path / "nothing.pt")
    model = new_model()
    good = tmp_path / "good.pt"
    save_vae(model, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated.pt could not be read"):
        load_vae(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not an nfutils VAE checkpoint"):
        load_checkpoint(other)
    # fit_vae refuses to resume a checkpoint that is corrupt instead of silently restarting
    train, test = tiny_data()
    with pytest.raises(CheckpointError):
        fit_vae(new_model(), train, test, **FIT, checkpoint_path=truncated)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "k2.pt"
    train, _ = tiny_data()
    fit_vae(new_model(), train, None, **{**FIT, "num_epochs": 1}, checkpoint_path=path)
    with pytest.raises(ValueError, match="was made for a VAE with config"):
        fit_vae(VAE(**{**SETUP, "flow_length": 3}), train, None, **FIT, checkpoint_path=path)


def test_save_and_load_vae_round_trip_in_float16_and_float32(tmp_path):
    model = new_model()
    x = torch.bernoulli(torch.full((4, DATA_DIM), 0.5))
    for dtype, tol in ((torch.float32, 0.0), (torch.float16, 1e-2)):
        path = tmp_path / f"m_{dtype}.pt"
        save_vae(model, path, dtype=dtype, note="hello")
        loaded, state = load_vae(path)
        assert state["note"] == "hello" and state["config"] == model.config
        assert next(loaded.parameters()).dtype == torch.float32
        a = bound(model, x, 3, generator=torch.Generator().manual_seed(0)).elbo
        b = bound(loaded, x, 3, generator=torch.Generator().manual_seed(0)).elbo
        assert (a - b).abs().max() <= tol * a.abs().max()


def test_atomic_write_leaves_the_old_file_when_saving_fails(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"config": {}, "model": {}, "value": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint({"config": {}, "model": {}, "value": Unpicklable()}, path)
    assert load_checkpoint(path)["value"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_non_finite_loss_stops_training(tmp_path):
    train, test = tiny_data()
    model = new_model()
    with torch.no_grad():
        model.decoder[-1].bias[0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="step 0"):
        fit_vae(model, train, test, **FIT, checkpoint_path=tmp_path / "nan.pt")
    assert not (tmp_path / "nan.pt").exists()


def test_bad_shapes_and_optimizer_names():
    train, _ = tiny_data()
    with pytest.raises(ValueError, match=r"\(N, 12\).*\(40, 11\)"):
        fit_vae(new_model(), train[:, :11], None, **FIT)
    with pytest.raises(ValueError, match="optimizer must be"):
        make_optimizer(new_model().parameters(), "sgd")
    rmsprop = make_optimizer(new_model().parameters(), "rmsprop", lr=1e-4)
    assert isinstance(rmsprop, torch.optim.RMSprop) and rmsprop.defaults["momentum"] == 0.9
    assert "fit_vae" in training.__all__


def test_lr_schedule_and_clipping_follow_the_global_step_across_resumes(one_thread, tmp_path):
    train, test = tiny_data()
    seen = []

    def schedule(step):
        seen.append(step)
        return 1.0 / (1 + step)

    settings = {**FIT, "lr_schedule": schedule, "max_grad_norm": 1.0}
    reference = new_model()
    fit_vae(reference, train, test, **settings)
    assert seen == list(range(12))
    path = tmp_path / "sched.pt"
    model = new_model()
    history = fit_vae(model, train, test, **settings, checkpoint_path=path, time_budget=0.0)
    while not history.finished:
        model = new_model()
        history = fit_vae(model, train, test, **settings, checkpoint_path=path)
    assert_same_parameters(model, reference)
    state = load_checkpoint(path)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(FIT["lr"] / 12)


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
