"""scripts/vae2d.py, the long runs behind Part 3: the training recipe recorded in the checkpoint
and resumed after a stop, the saved gap split tied to its checkpoints and kept per model, the
learning curves resumed run by run and merged, and the command line's subcommands (on tiny data)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nfutils import inference_gaps, vae, vae_training

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("vae2d_script", ROOT / "scripts" / "vae2d.py")
vae2d = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vae2d)


@pytest.fixture
def tiny_mnist(monkeypatch):
    torch.set_num_threads(1)
    grey = torch.rand(200, 784, generator=torch.Generator().manual_seed(0))
    binary = (grey[:50] > 0.5).float()
    monkeypatch.setattr(vae2d.data, "load_mnist", lambda split: (grey, torch.zeros(200)))
    monkeypatch.setattr(vae2d.data, "binarized_test_set", lambda: (binary, torch.zeros(50)))
    return grey, binary


def test_train_model_uses_the_recipe_records_it_and_resumes(tmp_path, tiny_mnist):
    out = tmp_path / "K2.pt"
    _, history = vae2d.train_model(2, num_epochs=2, progress=False, run_dir=tmp_path, out_path=out)
    assert history.finished and len(history.epochs) == 2
    _, checkpoint = vae_training.load_vae(out)
    settings = checkpoint["settings"]
    assert settings["schedule"] == "warmup_cosine" and settings["total_steps"] == 4
    assert settings["warmup_steps"] == 3 and settings["anneal"] is False
    assert settings["max_grad_norm"] == vae2d.MAX_GRAD_NORM
    assert checkpoint["budget"]["steps"] == 4 and checkpoint["budget"]["epochs"] == 2
    # run again: the finished state in run_dir is picked up, nothing is trained twice
    _, again = vae2d.train_model(2, num_epochs=2, progress=False, run_dir=tmp_path, out_path=out)
    assert again.resumed_from and again.steps == history.steps


def test_saved_gaps_belong_to_their_checkpoints_and_are_kept_per_model(tmp_path):
    torch.manual_seed(0)
    paths = {}
    for flow_length in (0, 2):
        model = vae.VAE(latent_dim=2, flow_length=flow_length, hidden=8, data_dim=20)
        paths[flow_length] = tmp_path / f"K{flow_length}.pt"
        vae_training.save_vae(model, paths[flow_length])
    x = (torch.rand(3, 20, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    settings = dict(num_steps=3, num_samples=2, lr=1e-2, warmup_steps=1, elbo_samples=10,
                    grid_extent=6.0, grid_resolution=31)
    out = tmp_path / "gaps.json"
    results = vae2d.compute_gaps(paths, x, settings, out)
    direct = inference_gaps.inference_gaps(vae_training.load_vae(paths[2])[0], x, settings)
    torch.testing.assert_close(results[2].amortization, direct.amortization)
    loaded = inference_gaps.load_gaps(out, paths)
    assert set(loaded) == {0, 2}
    for k in loaded:
        torch.testing.assert_close(loaded[k].amortization, results[k].amortization)
    table = vae2d.gap_table(loaded)
    assert table.count("| K = ") == 2 and "Paired, K = 2 minus K = 0" in table
    vae_training.save_vae(vae.VAE(latent_dim=2, flow_length=2, hidden=8, data_dim=20), paths[2])
    assert set(inference_gaps.load_gaps(out, paths)) == {0}  # a changed checkpoint invalidates its results
    again = vae2d.compute_gaps(paths, x, settings, out)  # recomputes K = 2 only
    torch.testing.assert_close(again[0].amortization, results[0].amortization)
    assert set(inference_gaps.load_gaps(out, paths)) == {0, 2}


def test_learning_curves_resume_run_by_run(tmp_path, tiny_mnist, monkeypatch):
    monkeypatch.setitem(vae2d.CURVE_DEFAULTS, "samples", (1,))
    monkeypatch.setitem(vae2d.CURVE_DEFAULTS, "seeds", (0, 1))
    partial = tmp_path / "curves.partial.json"
    first = vae2d.learning_curves((0,), num_epochs=1, train_size=100, test_size=20,
                                  partial_path=partial, progress=False)
    assert [(r["flow_length"], r["seed"]) for r in first["runs"]] == [(0, 0), (0, 1)]
    saved = json.loads(partial.read_text())
    saved["runs"] = saved["runs"][:1]  # as if stopped after the first run
    partial.write_text(json.dumps(saved))
    resumed = vae2d.learning_curves((0,), num_epochs=1, train_size=100, test_size=20,
                                    partial_path=partial, progress=False)
    assert resumed["runs"][0] == saved["runs"][0]
    assert resumed["runs"][1]["test_elbo"] == pytest.approx(first["runs"][1]["test_elbo"])


def _curves(flow_lengths, epochs=10, value=0.0):
    runs = [{"flow_length": k, "num_samples": s, "seed": seed, "test_elbo": [value]}
            for k in flow_lengths for s in (1, 10) for seed in (0, 1)]
    return {"config": {"num_epochs": epochs, "flow_lengths": list(flow_lengths)}, "runs": runs,
            "device": "cpu", "threads": 1}


def test_merge_curves_replaces_only_the_new_flow_lengths():
    merged = vae2d.merge_curves(_curves((0, 16), value=-1.0), _curves((16,), value=-2.0))
    assert merged["config"]["flow_lengths"] == [0, 16]
    assert len(merged["runs"]) == 8
    assert {r["test_elbo"][0] for r in merged["runs"] if r["flow_length"] == 0} == {-1.0}
    assert {r["test_elbo"][0] for r in merged["runs"] if r["flow_length"] == 16} == {-2.0}
    assert merged["runs"] == sorted(merged["runs"], key=lambda r: (r["flow_length"], r["num_samples"], r["seed"]))
    with pytest.raises(ValueError, match="same budget"):
        vae2d.merge_curves(_curves((0, 16)), _curves((16,), epochs=5))


def test_paths_are_the_repository_s_and_the_command_line_keeps_its_subcommands():
    assert vae2d.ROOT == ROOT and vae2d.checkpoint_path(16) == ROOT / "data/checkpoints/vae2d_K16.pt"
    assert vae2d.checkpoint_path(16, paper_order=True).name == "vae2d_K16_paper_order.pt"
    assert vae2d.checkpoint_path(0).is_file()
    usage = subprocess.run([sys.executable, str(ROOT / "scripts" / "vae2d.py"), "--help"],
                           capture_output=True, text=True, check=True, cwd=ROOT).stdout
    for word in ("{train,curves,gaps}", "--flow-lengths", "--epochs", "--time-budget", "--threads",
                 "--paper-order", "--images", "--table-only", "--merge", "resumable"):
        assert word in usage, word


def test_the_saved_gap_split_belongs_to_the_committed_checkpoints():
    paths = {K: vae2d.checkpoint_path(K) for K in (0, 16)}
    assert set(inference_gaps.load_gaps(vae2d.GAPS_PATH, paths)) == {0, 16}
    assert "Paired, K = 16 minus K = 0" in vae2d.gap_table(inference_gaps.load_gaps(vae2d.GAPS_PATH, paths))
