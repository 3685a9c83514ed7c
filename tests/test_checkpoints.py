"""One atomic save and one checked load (nfutils.checkpoints), and the committed files."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nfutils.amortized import load_amortized
from nfutils.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from nfutils.training import History
from nfutils.vae_training import load_vae

REPO = Path(__file__).resolve().parent.parent
FOLDER = REPO / "data" / "checkpoints"


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


def test_stale_partial_files_are_removed_by_the_next_save(tmp_path):
    path = tmp_path / "p.pt"
    for pid in range(3):  # what writers killed mid-write leave behind
        (tmp_path / f"p.pt.{pid}abc.partial").write_bytes(b"x" * 1000)
    (tmp_path / "other.pt.1.partial").write_bytes(b"y")  # another checkpoint's: kept
    save_checkpoint({"config": {}, "model": {}}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.pt.1.partial", "p.pt"]


def test_committed_checkpoints_still_load():
    names = sorted(path.name for path in FOLDER.glob("*.pt"))
    assert any(n.startswith("vae2d_") for n in names) and any(n.endswith("_amortizer_full.pt") for n in names)
    for name in names:
        if name.startswith("part1_") or name == "part2_per_angle_flows.pt":  # fitted flows, not one model
            key = "fits" if name.startswith("part1_") else "result"
            state = load_checkpoint(FOLDER / name, required=(key,))  # checksum verified
            assert len(state[key]) > 0, f"{name}: holds no fits"
            continue
        if name.startswith("part2_"):
            model, state = load_amortized(FOLDER / name)
            assert int(state["step"]) == state["run_config"]["num_steps"]
            assert model.flow_length == state["run_config"]["model"]["flow_length"]
        else:
            model, state = load_vae(FOLDER / name)
            assert model.config == state["config"]
        history = History.from_dict(state["history"])
        assert history.finished or name.startswith("part2_")
        assert len(history.steps) > 0 and history.seconds > 0


def _run_converter(*paths):
    result = subprocess.run([sys.executable, str(REPO / "tools" / "convert_checkpoints.py"),
                             *map(str, paths)], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_files_of_the_older_key_layout_are_refused_clearly_and_converted_once(tmp_path):
    """Files in the older key layout: the loaders name the key they cannot use; the converter
    (tools/convert_checkpoints.py) fixes them, once."""
    amortizer = load_checkpoint(FOLDER / "part2_amortizer_full.pt")
    old = {key: value for key, value in amortizer.items() if key != "checksum"}
    model_config = dict(old["run_config"]["model"])
    model_config["num_layers"] = model_config.pop("flow_length")
    old["run_config"] = {**old["run_config"], "model": model_config}
    old["history"] = {**old["history"], "resumed_from": 0}
    old_part2 = tmp_path / "part2_old.pt"
    torch.save(old, old_part2)  # no checksum, as the first files were written
    vae_state = load_checkpoint(FOLDER / "vae2d_K0.pt")
    old_vae = tmp_path / "vae_old.pt"
    config = {k: v for k, v in vae_state["config"].items() if k != "standardized_flow"}
    save_checkpoint({**{k: v for k, v in vae_state.items() if k != "checksum"}, "config": config},
                    old_vae)
    with pytest.raises(CheckpointError, match="does not match its run_config.*num_layers"):
        load_amortized(old_part2)
    with pytest.raises(ValueError, match=r"missing \['standardized_flow'\]"):
        load_vae(old_vae)

    first = _run_converter(old_part2, old_vae)
    assert "num_layers -> flow_length" in first and "added standardized_flow" in first
    converted = {path: path.read_bytes() for path in (old_part2, old_vae)}
    assert _run_converter(old_part2, old_vae).count("up to date") == 2  # idempotent
    assert all(path.read_bytes() == data for path, data in converted.items())

    model, state = load_amortized(old_part2)  # checksum verified by load_checkpoint
    assert "checksum" in state and state["history"]["resumed_from"] == []
    reference, _ = load_amortized(FOLDER / "part2_amortizer_full.pt")
    for a, b in zip(model.state_dict().values(), reference.state_dict().values()):
        assert torch.equal(a, b)
    model, state = load_vae(old_vae)
    assert state["config"]["standardized_flow"] is False
