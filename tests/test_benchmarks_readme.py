"""benchmarks/README.md: the retraining times it quotes are the seconds the committed
checkpoints record, and every results file it names is committed."""

import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "benchmarks" / "README.md").read_text()
CHECKPOINTS = ROOT / "data" / "checkpoints"


def recorded_seconds(name):
    state = torch.load(CHECKPOINTS / name, weights_only=True)
    return float(state["budget"]["seconds"] if state.get("budget") else state["history"]["seconds"])


def test_the_retraining_times_are_the_checkpoints():
    part2 = [recorded_seconds(f"part2_{name}amortizer_full.pt") for name in ("", "radius_", "raw_angle_")]
    assert f"Part 2 amortizers {min(part2):.0f}-{max(part2):.0f} s each" in README
    assert (f"Part 3\nmodels {recorded_seconds('vae2d_K0.pt'):.0f} and "
            f"{recorded_seconds('vae2d_K16.pt'):.0f} s") in README
    part4 = [recorded_seconds(f"mnist40_K{k}.pt") for k in (0, 2, 10, 20, 40, 80)]
    assert (f"{min(part4) / 3600:.1f}-{max(part4) / 3600:.1f} CPU-hours each, "
            f"{sum(part4) / 3600:.1f}\ntogether") in README


def test_every_results_file_named_is_committed():
    named = set(re.findall(r"results/([\w.]+\.md)", README))
    assert named and all((ROOT / "benchmarks" / "results" / name).is_file() for name in named)
