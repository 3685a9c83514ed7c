"""nfutils.experiments.vae2d (Part 3) and its command line scripts/vae2d.py: the training recipe
recorded in the checkpoint, the saved gap split tied to its checkpoints (on tiny data), merging
learning curves, and the command line's subcommands."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nfutils.experiments import vae2d

ROOT = Path(__file__).resolve().parent.parent
from nfutils import inference_gaps, vae, vae_training  # noqa: E402


def test_train_model_uses_the_recipe_and_records_it(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    grey = torch.rand(200, 784, generator=torch.Generator().manual_seed(0))
    binary = (grey[:50] > 0.5).float()
    monkeypatch.setattr(vae2d.data, "load_mnist", lambda split: (grey, torch.zeros(200)))
    monkeypatch.setattr(vae2d.data, "binarized_test_set", lambda: (binary, torch.zeros(50)))
    out = tmp_path / "K2.pt"
    _, history = vae2d.train_model(2, num_epochs=2, progress=False, run_dir=tmp_path, out_path=out)
    assert history.finished and len(history.epochs) == 2
    _, checkpoint = vae_training.load_vae(out)
    settings = checkpoint["settings"]
    assert settings["schedule"] == "warmup_cosine" and settings["total_steps"] == 4
    assert settings["anneal"] is False and settings["max_grad_norm"] == vae2d.MAX_GRAD_NORM
    assert "cosine-decayed to 0 at step 4" in vae2d.describe_training(checkpoint)
    old = {"settings": {"num_epochs": 30, "lr": 1e-3, "anneal": True}}
    assert "annealed" in vae2d.describe_training(old)


def test_saved_gaps_belong_to_their_checkpoints(tmp_path):
    torch.manual_seed(0)
    paths = {}
    for flow_length in (0, 2):
        model = vae.VAE(latent_dim=2, flow_length=flow_length, hidden=8, data_dim=20)
        paths[flow_length] = tmp_path / f"K{flow_length}.pt"
        vae_training.save_vae(model, paths[flow_length])
    models = {k: vae_training.load_vae(p)[0] for k, p in paths.items()}
    x = (torch.rand(3, 20, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    settings = dict(num_steps=3, num_samples=2, lr=1e-2, warmup_steps=1, elbo_samples=10,
                    grid_extent=6.0, grid_resolution=31)
    results = vae2d.gap_split(models, x, settings)
    out = tmp_path / "gaps.json"
    vae2d.save_gaps(results, paths, out)
    loaded = vae2d.load_gaps(paths, out)
    assert set(loaded) == {0, 2}
    for k in loaded:
        assert isinstance(loaded[k], inference_gaps.InferenceGaps)
        torch.testing.assert_close(loaded[k].amortization, results[k].amortization)
    table = vae2d.gap_table(loaded)
    assert table.count("| K = ") == 2 and "Paired, K = 2 minus K = 0" in table
    vae_training.save_vae(vae.VAE(latent_dim=2, flow_length=2, hidden=8, data_dim=20), paths[2])
    assert vae2d.load_gaps(paths, out) is None  # a changed checkpoint invalidates the results


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
    assert vae2d.checkpoint_path(0).is_file()
    usage = subprocess.run([sys.executable, str(ROOT / "scripts" / "vae2d.py"), "--help"],
                           capture_output=True, text=True, check=True, cwd=ROOT).stdout
    for word in ("{train,curves,gaps}", "--flow-lengths", "--epochs", "--time-budget", "--threads",
                 "--paper-order", "--images", "--table-only", "--merge"):
        assert word in usage, word
