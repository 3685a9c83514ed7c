"""Load-or-compute: a result that takes minutes is computed once, saved, and loaded after.

A notebook cell whose computation is long (per-target fits, grid quadratures, importance
sampling on the whole test set) calls ``load_or_compute(path, compute, settings, budget)``:

* when ``path`` exists, was written with exactly these ``settings`` and ``recompute`` is False,
  the saved result is returned and one line says what it holds (``budget``) and how long
  computing it took;
* otherwise ``compute()`` runs, is timed, and (when ``write`` is True) its result is saved with
  the settings, the seconds and the number of torch threads, atomically and with a checksum
  (``checkpoints.save_checkpoint``; read back with ``checkpoints.load_checkpoint``, so with
  ``weights_only=True``).

``settings`` should name everything the result depends on, including the SHA-256 of the
checkpoints it was computed from (``checkpoints.file_sha256``): a result is then never paired
with another model. ``save_json`` is the atomic write of results kept as JSON.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .checkpoints import load_checkpoint, save_checkpoint

__all__ = ["load_or_compute", "save_json"]


def load_or_compute(path: str | os.PathLike, compute: Callable[[], dict[str, Any]],
                    settings: dict[str, Any], budget: str, recompute: bool = False,
                    write: bool = True) -> dict[str, Any]:
    """The saved result at ``path`` if it matches ``settings``, else ``compute()`` (saved).

    Args:
        path: the result file (``.pt``).
        compute: () -> a dict of tensors and plain values (what ``weights_only`` loads).
        settings: everything the result depends on (budgets, seeds, checkpoint hashes).
        budget: a few words on what the result holds, printed beside it.
        recompute: compute even when a matching file exists (a notebook's ``retrain``).
        write: save a computed result (False in quick mode: committed files stay as they are).

    Returns:
        the result dict.
    """
    path = Path(path)
    if path.exists() and not recompute:
        state = load_checkpoint(path, required=("result", "settings", "seconds"))
        if state["settings"] == settings:
            print(f"loaded {path.name} ({budget}); computing it took {state['seconds']:.0f} s "
                  f"at {state['threads']} torch thread(s)")
            return state["result"]
        print(f"{path.name} was computed with other settings: computing it again")
    started = time.perf_counter()
    result = compute()
    seconds = time.perf_counter() - started
    if write:
        save_checkpoint({"result": result, "settings": settings, "seconds": seconds,
                         "threads": torch.get_num_threads()}, path)
    print(f"computed in {seconds:.0f} s ({budget})" + (f", saved to {path.name}" if write else ""))
    return result


def save_json(payload: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``payload`` as indented JSON to ``path`` atomically (a temporary file, then
    ``os.replace``), creating the folder if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)
