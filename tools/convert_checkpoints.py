"""Bring checkpoints written with older key names up to date, once, in place.

What it changes, and only where needed (a file already up to date is not rewritten, so running
it twice changes nothing):

* a VAE checkpoint (``"config"``) without ``standardized_flow``: files written before that
  option existed used the paper's order z_K = f(mu + sigma * eps), i.e. ``False``;
* a Part 2 amortizer (``"run_config"``) whose model config names the flow length
  ``num_layers``: renamed to ``flow_length``; its history's ``resumed_from`` (one step, 0 for
  never) becomes the list of ``training.History``; the learning-rate scheduler's state, which
  ``fit_amortized`` no longer uses (its schedule is a function of the step), is dropped;
* a Part 4 checkpoint of several training stages (``"stages"``) whose combined history lacks
  ``finished``: set from its last stage's schedule (finished when it reached its last step).

A converted file is written with ``checkpoints.save_checkpoint``: atomically, with a valid
checksum. A file whose stored checksum does not match is refused, not converted.

Usage:
    python tools/convert_checkpoints.py [FILE ...]    (default: data/checkpoints/*.pt)
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nfutils.checkpoints import load_checkpoint, save_checkpoint  # noqa: E402


def convert(state: dict) -> list[str]:
    """Update ``state`` in place; returns what was changed (empty: already up to date)."""
    changes = []
    if isinstance(state.get("config"), dict) and "standardized_flow" not in state["config"]:
        state["config"] = {**state["config"], "standardized_flow": False}
        changes.append("config: added standardized_flow = False")
    run_config = state.get("run_config")
    if isinstance(run_config, dict) and "num_layers" in run_config.get("model", {}):
        model = {("flow_length" if key == "num_layers" else key): value
                 for key, value in run_config["model"].items()}
        state["run_config"] = {**run_config, "model": model}
        changes.append("run_config['model']: num_layers -> flow_length")
    history = state.get("history")
    if run_config is not None and isinstance(history, dict) and isinstance(
            history.get("resumed_from"), int):
        step = history["resumed_from"]
        state["history"] = {**history, "resumed_from": [step] if step else []}
        changes.append("history: resumed_from as a list")
    if state.get("stages") and isinstance(history, dict) and "finished" not in history:
        schedule = state["stages"][-1].get("schedule", {})
        state["history"] = {**history, "finished": schedule.get("step") == schedule.get("total_steps")}
        changes.append(f"history: finished = {state['history']['finished']} (from the last stage)")
    if run_config is not None and "scheduler" in state:
        del state["scheduler"]
        changes.append("dropped the scheduler state")
    return changes


def main(paths: list[str]) -> None:
    files = [Path(p) for p in paths] or sorted((REPO / "data" / "checkpoints").glob("*.pt"))
    for path in files:
        state = load_checkpoint(path, required=())
        state.pop("checksum", None)
        changes = convert(state)
        if changes:
            save_checkpoint(state, path)
        print(f"{path.name}: " + ("; ".join(changes) if changes else "up to date"))


if __name__ == "__main__":
    main(sys.argv[1:])
