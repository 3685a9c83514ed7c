"""nfutils.vae_training: fit_vae on the shared loop and its checkpoints (atomic, weights_only,
clear errors), resume after a SIGKILL giving the same parameters as an uninterrupted run, time
budgets, NaN stop; save_vae / load_vae."""

import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from nfutils import checkpoints, training, vae_training
from nfutils.checkpoints import CheckpointError, load_checkpoint
from nfutils.training import History, NonFiniteLossError, make_optimizer
from nfutils.vae_training import fit_vae, load_vae, save_vae
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
    sys.path[:0] = [{tests_dir!r}, {tests_dir!r} + "/.."]  # this checkout's nfutils
    from test_vae_training import FIT, new_model, tiny_data
    from nfutils.vae_training import fit_vae
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
    deadline = time.monotonic() + 180  # the child imports torch: slow on a loaded machine
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
    with pytest.raises(CheckpointError, match="not an nfutils checkpoint of this kind"):
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
    assert "fit_vae" in vae_training.__all__


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



# ---------------------------------------------------------------- what the checks must catch


_UNPICKLED = []


def _record_unpickling():
    _UNPICKLED.append(True)
    return "ran"


class _CodeOnLoad:
    """An object whose unpickling calls a function: what weights_only=True must refuse."""

    def __reduce__(self):
        return (_record_unpickling, ())


def test_load_checkpoint_never_runs_code_from_the_file(tmp_path):
    path = tmp_path / "malicious.pt"
    torch.save({"config": dict(new_model().config), "model": new_model().state_dict(),
                "note": _CodeOnLoad()}, path)
    _UNPICKLED.clear()
    with pytest.raises(CheckpointError, match="could not be read"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError):
        load_vae(path)
    assert not _UNPICKLED


def test_checkpoints_are_written_every_checkpoint_every_steps(tmp_path, monkeypatch):
    saved_steps = []
    original = training.save_checkpoint  # the loop's one save, used by every fit

    def recording_save(state, path):
        saved_steps.append(state["step"])
        original(state, path)

    monkeypatch.setattr(training, "save_checkpoint", recording_save)
    train, _ = tiny_data()  # 4 steps per epoch, 12 in all
    fit_vae(new_model(), train, None, **FIT, checkpoint_path=tmp_path / "c.pt",
            checkpoint_every=2)
    assert saved_steps == [2, 4, 6, 8, 10, 12]  # every 2 steps, and the final state
    saved_steps.clear()
    fit_vae(new_model(), train, None, **FIT, checkpoint_path=tmp_path / "d.pt",
            checkpoint_every=5)
    assert saved_steps == [5, 10, 12]


def _nan_loss_at(monkeypatch, bad_call):
    """Make ``bound`` inside fit_vae return a NaN loss at its call number ``bad_call``."""
    calls = {"n": 0}
    original = vae_training.bound

    def bound_with_nan(*args, **kwargs):
        terms = original(*args, **kwargs)
        if calls["n"] == bad_call:
            terms.loss = terms.loss * float("nan")
        calls["n"] += 1
        return terms

    monkeypatch.setattr(vae_training, "bound", bound_with_nan)


def test_nan_loss_is_caught_before_the_update(tmp_path, monkeypatch):
    """No optimizer step is taken on a NaN loss: the parameters stay those of the last step."""
    train, _ = tiny_data()
    _nan_loss_at(monkeypatch, 5)
    snapshots = {}
    model = new_model()

    def snapshot(step, elbo):
        snapshots[step] = {k: v.clone() for k, v in model.state_dict().items()}

    with pytest.raises(NonFiniteLossError, match="step 5"):
        fit_vae(model, train, None, **FIT, checkpoint_path=tmp_path / "n.pt",
                checkpoint_every=2, callback=snapshot)
    assert max(snapshots) == 5
    for name, value in model.state_dict().items():
        assert torch.equal(value, snapshots[5][name]), name
    assert load_checkpoint(tmp_path / "n.pt")["step"] == 4


def _nan_gradient_at(model, bad_update):
    """Make the gradient of one weight NaN in update number ``bad_update`` (a finite loss
    whose update ruins the parameters)."""
    calls = {"n": 0}

    def hook(grad):
        calls["n"] += 1
        return grad * float("nan") if calls["n"] == bad_update + 1 else grad

    model.decoder[-1].bias.register_hook(hook)


def test_a_ruined_update_on_a_checkpoint_step_is_not_saved_and_a_lower_lr_applies(tmp_path):
    train, _ = tiny_data()
    path = tmp_path / "r.pt"
    model = new_model()
    _nan_gradient_at(model, 3)  # the update that ends step 4, a checkpoint step
    with pytest.raises(NonFiniteLossError, match="update of step 3"):
        fit_vae(model, train, None, **FIT, checkpoint_path=path, checkpoint_every=2)
    state = load_checkpoint(path)
    assert state["step"] == 2
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    # rerun with a smaller learning rate, as the error advises: it is applied and recorded
    lower = FIT["lr"] / 10
    history = fit_vae(new_model(), train, None, **{**FIT, "lr": lower}, checkpoint_path=path,
                      checkpoint_every=2)
    assert history.finished and history.resumed_from == [2]
    assert history.setting_changes == [{"step": 2, "name": "lr", "old": FIT["lr"], "new": lower}]
    final = load_checkpoint(path)
    assert final["settings"]["lr"] == lower
    assert all(group["lr"] == lower for group in final["optimizer"]["param_groups"])
    assert final["history"]["setting_changes"] == history.setting_changes


@pytest.mark.parametrize("name, value", [("seed", 8), ("optimizer", "rmsprop"),
                                         ("batch_size", 20)])
def test_resume_with_settings_that_fix_the_run_is_refused(tmp_path, name, value):
    train, _ = tiny_data()
    path = tmp_path / "s.pt"
    fit_vae(new_model(), train, None, **{**FIT, "num_epochs": 1}, checkpoint_path=path)
    with pytest.raises(ValueError, match=f"trained with {name} = .*received {name} = "):
        fit_vae(new_model(), train, None, **{**FIT, name: value}, checkpoint_path=path)


def test_fit_vae_refuses_a_weights_only_file(tmp_path):
    path = tmp_path / "weights.pt"
    save_vae(new_model(), path)
    train, _ = tiny_data()
    with pytest.raises(ValueError, match="holds weights only .*save_vae"):
        fit_vae(new_model(), train, None, **FIT, checkpoint_path=path)


def test_bad_arguments_are_refused_before_training(tmp_path):
    train, _ = tiny_data()
    calls = []
    for bad in (dict(log_every=0), dict(anneal_steps=0), dict(num_epochs=-1)):
        name = next(iter(bad))
        with pytest.raises(ValueError, match=f"{name} must be an integer >= 1"):
            fit_vae(new_model(), train, None, **{**FIT, **bad})
    with pytest.raises(ValueError, match=r"train_images is empty.*\(0, 12\)"):
        fit_vae(new_model(), train[:0], None, **FIT)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="checkpoint_path .*a_file/c.pt is not writable"):
        fit_vae(new_model(), train, None, **FIT, checkpoint_path=blocker / "c.pt",
                callback=lambda step, elbo: calls.append(step))
    assert not calls


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_map_location_cuda_without_a_gpu_says_so(tmp_path):
    path = tmp_path / "m.pt"
    save_vae(new_model(), path)
    with pytest.raises(ValueError, match="no CUDA device is available"):
        load_checkpoint(path, map_location="cuda")


def _data_offsets(path):
    """(start, size) of every tensor record inside a torch zip checkpoint."""
    import zipfile

    offsets = []
    with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
        for info in archive.infolist():
            if "/data/" in info.filename and info.file_size > 0:
                raw.seek(info.header_offset)
                header = raw.read(30)
                name_len = int.from_bytes(header[26:28], "little")
                extra_len = int.from_bytes(header[28:30], "little")
                offsets.append((info.header_offset + 30 + name_len + extra_len, info.file_size))
    return offsets


def test_a_flipped_byte_in_the_weights_is_detected(tmp_path):
    path = tmp_path / "f.pt"
    train, _ = tiny_data()
    fit_vae(new_model(), train, None, **{**FIT, "num_epochs": 1}, checkpoint_path=path)
    good = path.read_bytes()
    reference = load_checkpoint(path)
    generator = torch.Generator().manual_seed(3)
    records = _data_offsets(path)
    for _ in range(20):
        start, size = records[int(torch.randint(len(records), (1,), generator=generator))]
        position = start + int(torch.randint(size, (1,), generator=generator))
        corrupt = bytearray(good)
        corrupt[position] ^= 1 << int(torch.randint(8, (1,), generator=generator))
        path.write_bytes(bytes(corrupt))
        with pytest.raises(CheckpointError, match="checksum"):
            load_checkpoint(path)
    path.write_bytes(good)
    assert checkpoints.state_checksum(load_checkpoint(path)) == reference["checksum"]


def _no_step(step, elbo):
    raise AssertionError(f"a step was taken (step {step}) although the images are invalid")


@pytest.mark.parametrize("which, bad, message", [
    ("test", float("nan"), r"test_images must have values in \[0, 1\].*NaN"),
    ("test", float("inf"), r"test_images must have values in \[0, 1\].*inf"),
    ("test", 0.5, r"test_images must be binary.*Eq\. \(20\)"),
    ("test", -1.0, r"test_images must have values in \[0, 1\]"),
    ("train", float("nan"), r"train_images must have values in \[0, 1\].*NaN"),
    ("train", 1.5, r"train_images must have values in \[0, 1\]"),
])
def test_train_and_test_images_are_checked_once_before_the_first_step(which, bad, message):
    """NaN, inf, values outside [0, 1] and (for the test set, which the bound of Eq. (20) takes
    as it is) grey levels stop ``fit_vae`` before its first step, wherever they sit: here in the
    last image, whose batch would come up last."""
    train, test = tiny_data()
    images = train if which == "train" else test
    images[-1, 3] = bad
    with pytest.raises(ValueError, match=message):
        fit_vae(new_model(), train, test, **FIT, callback=_no_step)


def test_grey_level_training_images_are_accepted():
    """Training images are binarized afresh at each step: grey levels in [0, 1] are what they
    should be, and one step runs on them."""
    train, test = tiny_data()
    assert not bool(((train == 0) | (train == 1)).all())
    history = fit_vae(new_model(), train, test, **{**FIT, "num_epochs": 1})
    assert history.finished and math.isfinite(history.test_elbo[0])
