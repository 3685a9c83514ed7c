"""scripts/mnist40.py: evaluation of a checkpoint, the generated table and the README update."""

import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from scripts import mnist40  # noqa: E402

from nfutils import training, vae  # noqa: E402


@pytest.fixture
def tiny_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = vae.VAE(latent_dim=3, flow_length=2, hidden=16, data_dim=784)
    path = tmp_path / "tiny.pt"
    training.save_vae(model, path, dtype=torch.float16,
                      budget={"updates": 600, "epochs": 1, "seconds": 36.0, "device": "cpu (test)"})
    return path


def test_evaluate_checkpoint_is_consistent(tiny_checkpoint):
    images = (torch.rand(12, 784, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    row = mnist40.evaluate_checkpoint(tiny_checkpoint, images, samples_full=4, samples_subset=64,
                                      subset=5, dev=torch.device("cpu"))
    assert row["flow_length"] == 2 and row["test_images"] == 12 and row["subset"] == 5
    # the gap is the paired difference of the two subset columns
    assert row["posterior_gap"] == pytest.approx(row["nll_subset_low"] - row["nll_subset_high"], abs=1e-9)
    # an independent check of the low-S column: the same model, the same seed, by hand
    model, _ = training.load_vae(tiny_checkpoint)
    generator = torch.Generator().manual_seed(0)
    neg_elbo = -training.evaluate_elbo(model, images, num_samples=1, seed=0)  # own generator
    assert row["neg_elbo"] == pytest.approx(neg_elbo, abs=1e-6)
    log_px = vae.log_likelihood(model, images, num_samples=4, generator=generator)
    assert row["nll_full"] == pytest.approx(float(-log_px.mean()), abs=1e-6)
    assert row["nll_subset_low"] == pytest.approx(float(-log_px[:5].mean()), abs=1e-6)
    # more samples give a larger log p(x) estimate on average, and IS beats the ELBO
    assert row["posterior_gap"] > 0
    assert row["nll_full"] < row["neg_elbo"]


def test_results_table_and_readme_update(tmp_path, tiny_checkpoint):
    row = {"flow_length": 10, "budget": {"updates": 6000, "epochs": 10, "seconds": 1800.0,
                                          "device": "cpu (x86_64, 1 threads)"},
           "test_images": 10000, "neg_elbo": 95.5, "samples_full": 200, "nll_full": 91.25,
           "nll_full_stderr": 0.25, "subset": 200, "samples_subset": 5000,
           "nll_subset_low": 90.0, "nll_subset_high": 89.5, "posterior_gap": 0.5}
    table = mnist40.results_table([row])
    line = next(l for l in table.splitlines() if l.startswith("| 10 |"))
    assert "95.50" in line and "91.25 ± 0.25" in line and "87.50" in line and "88.95" in line
    assert "6,000 updates (10 epochs), 0.50 h" in line
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{mnist40.README_BEGIN}\nold\n{mnist40.README_END}\nrest\n")
    mnist40.update_readme([row], readme)
    text = readme.read_text()
    assert "old" not in text and "| 10 | 95.50" in text and text.endswith("rest\n")
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        mnist40.update_readme([row], readme)
