"""scripts/mnist40.py, the long runs of Part 4: the per-image evaluation, the paired summary, the
generated table and the README update, the staged training, the frozen-decoder experiment and its
checks (on a tiny model), the result files' round trips, and the command line's subcommands."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import importlib.util

import torch

from nfutils import checkpoints, vae, vae_training

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("mnist40_script", ROOT / "scripts" / "mnist40.py")
mnist40 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mnist40)

TINY_SETTINGS = dict(test_images=12, elbo_samples=3, samples_paper=4, samples_paired=6,
                     paired_images=8, samples_subset=20, subset_images=5)


@pytest.fixture
def tiny_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = vae.VAE(latent_dim=3, flow_length=2, hidden=16, data_dim=784)
    path = tmp_path / "tiny.pt"
    vae_training.save_vae(model, path, dtype=torch.float16,
                      budget={"updates": 600, "epochs": 1, "seconds": 36.0, "device": "cpu (test)"})
    return path


def tiny_images():
    return (torch.rand(12, 784, generator=torch.Generator().manual_seed(1)) < 0.3).float()


def test_evaluate_checkpoint_matches_the_estimators_called_directly(tiny_checkpoint, tmp_path):
    images = tiny_images()
    result = mnist40.evaluate_checkpoint(tiny_checkpoint, images, TINY_SETTINGS,
                                         dev=torch.device("cpu"))
    values = result["values"]
    assert result["flow_length"] == 2 and result["budget"]["updates"] == 600
    assert [values[k].numel() for k in ("reconstruction", "kl", "log_px_paper", "log_px_paired",
                                        "log_px_subset")] == [12, 12, 12, 8, 5]
    model, _ = vae_training.load_vae(tiny_checkpoint)  # the same model and streams, by hand
    terms = vae.bound(model, images, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(values["reconstruction"], terms.reconstruction.double())
    torch.testing.assert_close(values["kl"], terms.kl.double())
    log_px = vae.log_likelihood(model, images[:8], 6, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(values["log_px_paired"], log_px)
    # more samples give larger estimates on average, and importance sampling beats the ELBO
    elbo = values["reconstruction"] - values["kl"]
    assert float(values["log_px_subset"].mean()) > float(values["log_px_paper"][:5].mean())
    assert float(values["log_px_paper"].mean()) > float(elbo.mean())
    # round trip through the saved file
    mnist40.save_evaluation(result, mnist40.eval_path(2, tmp_path))
    loaded = mnist40.load_evaluations([2], tmp_path)[2]
    torch.testing.assert_close(loaded["values"]["log_px_paper"], values["log_px_paper"],
                               atol=1e-4, rtol=0)
    assert not list(tmp_path.glob("*.partial"))
    with pytest.raises(FileNotFoundError, match="mnist40.py evaluate --flow-lengths 80"):
        mnist40.load_evaluations([80], tmp_path)


def fake_results():
    generator = np.random.default_rng(0)
    results = {}
    for offset, k in enumerate((0, 10, 80)):
        n = 6
        values = {"reconstruction": torch.tensor(-90 + generator.normal(size=n)),
                  "kl": torch.tensor(20 + generator.normal(size=n)),
                  "log_px_paper": torch.tensor(-95 + offset + generator.normal(size=n)),
                  "log_px_paired": torch.tensor(-94 + offset + generator.normal(size=4)),
                  "log_px_subset": torch.tensor(-93 + offset + generator.normal(size=2))}
        results[k] = {"values": values, "settings": dict(TINY_SETTINGS),
                      "budget": {"updates": 6000, "epochs": 10, "seconds": 1800.0,
                                 "device": "cpu (x86_64, 1 threads)"}}
    return results


def test_summary_rows_against_numpy():
    results = fake_results()
    rows = mnist40.summary_rows(results)
    assert [r["flow_length"] for r in rows] == [0, 10, 80]
    v = {k: {name: t.numpy() for name, t in r["values"].items()} for k, r in results.items()}
    row = rows[2]
    elbo = v[80]["reconstruction"] - v[80]["kl"]
    assert row["neg_elbo"] == pytest.approx(-elbo.mean())
    assert row["neg_elbo_stderr"] == pytest.approx(elbo.std(ddof=1) / math.sqrt(6))
    assert row["reconstruction"] + row["kl"] == pytest.approx(row["neg_elbo"])
    difference = v[0]["log_px_paired"] - v[80]["log_px_paired"]
    assert row["vs_first"] == pytest.approx(difference.mean())
    assert row["vs_first_stderr"] == pytest.approx(difference.std(ddof=1) / 2)
    difference = v[10]["log_px_paired"] - v[80]["log_px_paired"]
    assert row["vs_previous"] == pytest.approx(difference.mean())
    assert row["nll_subset_paper"] == pytest.approx(-v[80]["log_px_paper"][:2].mean())


def test_results_table_and_readme_update(tmp_path):
    rows = mnist40.summary_rows(fake_results())
    table = mnist40.results_table(rows)
    line = next(l for l in table.splitlines() if l.startswith("| 10 |"))
    assert f"{rows[1]['nll_paper']:.2f} ± {rows[1]['nll_paper_stderr']:.2f}" in line
    assert f"{rows[1]['vs_first']:+.2f} ± {rows[1]['vs_first_stderr']:.2f}" in line
    assert "87.50" in line and "88.43" in line  # paper and reproduction at K = 10
    assert "6,000 updates (10 epochs), 0.50 h" in line
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{mnist40.README_BEGIN}\nold\n{mnist40.README_END}\nrest\n")
    mnist40.update_readme(rows, readme)
    text = readme.read_text()
    assert "old" not in text and "| 10 |" in text and text.endswith("rest\n")
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        mnist40.update_readme(rows, readme)


def test_frozen_decoder_experiment_runs_and_keeps_the_decoder(tiny_checkpoint):
    torch.set_num_threads(1)
    settings = dict(images=3, num_steps=30, num_samples=2, lr=1e-2, warmup_steps=5,
                    elbo_samples=50, is_samples=200)
    result = mnist40.frozen_decoder_experiment(tiny_checkpoint, tiny_images(), (0, 2),
                                               settings, dev=torch.device("cpu"))
    for k in (0, 2):
        assert result["elbo"][k].shape == (3,) and result["log_px"][k].shape == (3,)
        assert bool(torch.isfinite(result["elbo"][k]).all())
        assert float(result["log_px"][k].mean()) > float(result["elbo"][k].mean())


def test_a_continuation_stage_starts_from_the_committed_weights_and_keeps_every_record(
        tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setattr(mnist40, "CHECKPOINT_DIR", tmp_path / "checkpoints")
    monkeypatch.setattr(mnist40, "LATENT_DIM", 3)
    run_dir = tmp_path / "runs"
    generator = torch.Generator().manual_seed(0)
    train_images = torch.rand(200, 784, generator=generator)  # 2 steps per epoch
    test_images = torch.bernoulli(torch.rand(20, 784, generator=generator), generator=generator)
    for target in (1, 2):  # stage one, epoch by epoch as the sweep runs it
        mnist40.train_epoch(2, target, run_dir=run_dir, planned_epochs=2, warmup_steps=1,
                            train_images=train_images, test_images=test_images)
    first = checkpoints.load_checkpoint(mnist40.checkpoint_path(2))
    assert first["budget"]["updates"] == 4 and first["schedule"]["lr_multiplier_next"] == 0.0
    # a later sitting: the full state is gone, only the committed float16 file is left
    for path in run_dir.iterdir():
        path.unlink()
    history = mnist40.train_epoch(2, 1, run_dir=run_dir, planned_epochs=3, extend=True,
                                  peak_lr=1e-4, warmup_steps=1, train_images=train_images,
                                  test_images=test_images)
    assert history.epochs == [1]
    second = checkpoints.load_checkpoint(mnist40.checkpoint_path(2))
    assert len(second["stages"]) == 2 and second["stages"][0]["budget"]["updates"] == 4
    assert second["budget"]["updates"] == 6 and second["budget"]["epochs"] == 3
    assert second["history"]["epochs"] == [1, 2, 3]
    assert second["schedule"]["start"] == "committed weights"
    assert second["schedule"]["peak_lr"] == 1e-4
    # resuming the continuation keeps the stages before it
    mnist40.train_epoch(2, 2, run_dir=run_dir, planned_epochs=3, extend=True, peak_lr=1e-4,
                        warmup_steps=1, train_images=train_images, test_images=test_images)
    third = checkpoints.load_checkpoint(mnist40.checkpoint_path(2))
    assert len(third["stages"]) == 2 and third["history"]["epochs"] == [1, 2, 3, 4]
    assert third["budget"]["updates"] == 8


def test_frozen_results_round_trip_per_k(tiny_checkpoint, tmp_path):
    settings = dict(images=2, num_steps=5, num_samples=2, lr=1e-2, warmup_steps=1,
                    elbo_samples=10, is_samples=20)
    result = mnist40.frozen_decoder_experiment(tiny_checkpoint, tiny_images(), (0, 2), settings,
                                               dev=torch.device("cpu"))
    mnist40.save_frozen(result, tmp_path)
    loaded = mnist40.load_frozen((0, 2), tmp_path)
    assert loaded["settings"] == settings and set(loaded["elbo"]) == {0, 2}
    torch.testing.assert_close(loaded["elbo"][2], result["elbo"][2], atol=1e-4, rtol=0)
    assert loaded["decoder_sha256"] == checkpoints.file_sha256(tiny_checkpoint)
    with pytest.raises(FileNotFoundError, match="frozen --flow-lengths 80"):
        mnist40.load_frozen((80,), tmp_path)
    part = torch.load(mnist40.frozen_path(2, tmp_path), weights_only=True)
    checkpoints.save_checkpoint(dict(part, decoder_sha256="0" * 64),  # a consistent file
                                mnist40.frozen_path(2, tmp_path))
    with pytest.raises(ValueError, match="another decoder"):  # one K fitted to another decoder
        mnist40.load_frozen((0, 2), tmp_path)


def test_the_learning_rate_check_is_the_frozen_experiment_at_each_rate(tiny_checkpoint,
                                                                        tmp_path):
    settings = dict(images=100, num_steps=5, num_samples=2, lr=1e-2, warmup_steps=1,
                    elbo_samples=10, is_samples=20)
    check = dict(flow_lengths=(0, 2), images=2, lrs=(1e-3, 3e-2))
    result = mnist40.frozen_lr_check(tiny_checkpoint, tiny_images(), check, settings,
                                     dev=torch.device("cpu"))
    for lr in check["lrs"]:  # the same numbers as the frozen experiment run at that rate
        direct = mnist40.frozen_decoder_experiment(tiny_checkpoint, tiny_images(), (0, 2),
                                                   dict(settings, images=2, lr=lr),
                                                   dev=torch.device("cpu"))
        for k in (0, 2):
            assert result["elbo"][lr][k].shape == (2,)
            torch.testing.assert_close(result["elbo"][lr][k], direct["elbo"][k])
    assert not torch.equal(result["elbo"][1e-3][2], result["elbo"][3e-2][2])
    path = tmp_path / "check.pt"
    mnist40.save_frozen_lr_check(result, path)
    loaded = mnist40.load_frozen_lr_check(path)
    assert loaded["check"]["lrs"] == [1e-3, 3e-2] and loaded["settings"] == settings
    torch.testing.assert_close(loaded["elbo"][3e-2][2], result["elbo"][3e-2][2], atol=1e-4, rtol=0)
    with pytest.raises(FileNotFoundError, match="frozen-lr"):
        mnist40.load_frozen_lr_check(tmp_path / "missing.pt")


def test_the_budget_check_is_the_frozen_experiment_at_each_budget(tiny_checkpoint, tmp_path):
    settings = dict(images=100, num_steps=5, num_samples=2, lr=1e-2, warmup_steps=1,
                    elbo_samples=10, is_samples=20)
    budgets = (dict(num_steps=4, num_samples=2, average_fraction=0.0),
               dict(num_steps=8, num_samples=3, average_fraction=0.5))
    check = dict(flow_lengths=(0, 2), images=2, budgets=budgets)
    result = mnist40.frozen_budget_check(tiny_checkpoint, tiny_images(), check=check,
                                         settings=settings, dev=torch.device("cpu"))
    for index, budget in enumerate(budgets):  # the same numbers as the frozen experiment run
        direct = mnist40.frozen_decoder_experiment(tiny_checkpoint, tiny_images(), (0, 2),
                                                   dict(settings, images=2, **budget),
                                                   dev=torch.device("cpu"))
        for k in (0, 2):
            assert result["elbo"][k][index].shape == (2,)
            torch.testing.assert_close(result["elbo"][k][index], direct["elbo"][k])
    assert not torch.equal(result["elbo"][2][0], result["elbo"][2][1])
    only_two = mnist40.frozen_budget_check(tiny_checkpoint, tiny_images(), (2,), check, settings,
                                           dev=torch.device("cpu"))
    mnist40.save_frozen_budget_check(only_two, tmp_path)  # one process per K, one file per K
    with pytest.raises(FileNotFoundError, match="frozen-budget --flow-lengths 0"):
        mnist40.load_frozen_budget_check((0, 2), tmp_path)
    mnist40.save_frozen_budget_check(result, tmp_path)
    loaded = mnist40.load_frozen_budget_check((0, 2), tmp_path)
    assert loaded["check"]["budgets"][1] == budgets[1] and loaded["settings"] == settings
    assert loaded["decoder_sha256"] == checkpoints.file_sha256(tiny_checkpoint)
    torch.testing.assert_close(loaded["elbo"][2][1], result["elbo"][2][1], atol=1e-4, rtol=0)
    longer = dict(check, budgets=budgets + (dict(num_steps=6, num_samples=2, average_fraction=0.5),))
    grown = mnist40.frozen_budget_check(tiny_checkpoint, tiny_images(), check=longer,
                                        settings=settings, dev=torch.device("cpu"), previous=loaded)
    assert grown["seconds"][2][:2] == loaded["seconds"][2]  # kept, not refitted
    assert torch.equal(grown["elbo"][2][1], loaded["elbo"][2][1]) and len(grown["elbo"][2]) == 3
    direct = mnist40.frozen_decoder_experiment(tiny_checkpoint, tiny_images(), (0, 2),
                                               dict(settings, images=2, **longer["budgets"][2]),
                                               dev=torch.device("cpu"))
    torch.testing.assert_close(grown["elbo"][2][2], direct["elbo"][2])
    other = mnist40.frozen_budget_check(tiny_checkpoint, tiny_images(), check=longer,
                                        settings=dict(settings, lr=3e-2),
                                        dev=torch.device("cpu"), previous=loaded)
    assert not torch.equal(other["elbo"][2][0], loaded["elbo"][2][0])  # other settings: refitted
    part = torch.load(mnist40.frozen_budget_path(2, tmp_path), weights_only=True)
    checkpoints.save_checkpoint(dict(part, decoder_sha256="0" * 64),  # a consistent file
                                mnist40.frozen_budget_path(2, tmp_path))
    with pytest.raises(ValueError, match="decoder_sha256"):  # one K fitted to another decoder
        mnist40.load_frozen_budget_check((0, 2), tmp_path)


def test_the_committed_result_files_still_load():
    evaluations = mnist40.load_evaluations()
    assert sorted(evaluations) == list(mnist40.FLOW_LENGTHS)
    assert evaluations[80]["values"]["log_px_paper"].shape == (10_000,)
    rows = mnist40.summary_rows(evaluations)
    assert rows[-1]["vs_first"] < 0  # K = 80 below K = 0, as the table says
    frozen = mnist40.load_frozen()
    assert set(frozen["elbo"]) == set(mnist40.FLOW_LENGTHS)
    assert set(mnist40.load_frozen_lr_check()["elbo"]) == {2e-3, 5e-3}
    budget = mnist40.load_frozen_budget_check()
    assert len(budget["elbo"][80]) == len(mnist40.FROZEN_BUDGET_CHECK["budgets"])
    assert mnist40.PAPER_NLL[80] == 85.1 and 2 not in mnist40.PAPER_NLL


def test_paths_are_the_repository_s_and_the_readme_has_the_table_markers():
    assert mnist40.ROOT == ROOT and mnist40.README_PATH == ROOT / "README.md"
    assert mnist40.checkpoint_path(80) == ROOT / "data/checkpoints/mnist40_K80.pt"
    assert mnist40.checkpoint_path(80).is_file()
    text = mnist40.README_PATH.read_text()
    assert text.count(mnist40.README_BEGIN) == 1 and text.count(mnist40.README_END) == 1
    usage = subprocess.run([sys.executable, str(ROOT / "scripts" / "mnist40.py"), "--help"],
                           capture_output=True, text=True, check=True, cwd=ROOT).stdout
    for word in ("{train,extend,evaluate,frozen,frozen-lr,frozen-budget,readme}", "--flow-lengths", "--epochs",
                 "--hours", "--chunk-minutes", "--lr", "--threads"):
        assert word in usage, word


def test_the_notebook_writes_the_lesson_itself_and_only_loads_what_this_script_writes():
    import json

    notebook = json.loads((ROOT / "notebooks" / "04_vae_40d_latent.ipynb").read_text())
    source = "\n".join("".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code")
    for driver in ("train_sweep", "evaluate_checkpoint", "frozen_decoder_experiment", "frozen_lr_check",
                   "frozen_budget_check", "nfutils.experiments", "scripts"):
        assert driver not in source.replace("scripts/mnist40.py", ""), driver
    for written_out in ("def my_free_energy", "def my_training_step", "def my_log_px", "torch.logsumexp",
                        "def fit_frozen"):
        assert written_out in source, written_out
    # the evaluation is one block of the library, called by the notebook and by this script alike
    script = (ROOT / "scripts" / "mnist40.py").read_text()
    assert "bounds.evaluate_per_image(" in source and "bounds.evaluate_per_image(" in script
    for path in ("mnist40_eval_K", "mnist40_frozen_decoder_K", "mnist40_frozen_decoder_lr_check",
                 "mnist40_frozen_decoder_budget_K"):  # the files this script writes, loaded there
        assert path in source, path
