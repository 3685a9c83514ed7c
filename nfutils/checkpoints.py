"""One atomic save and one checked load for every checkpoint of the series.

A training run that is killed while writing must never leave a half-written file where a good
one was, and a file that was damaged later (a truncated download, a flipped byte) must be
refused with a message that says what is wrong and what to do, rather than load as garbage.

* ``save_checkpoint`` writes a dict with ``torch.save`` to a temporary file in the same folder,
  flushes it to disk and renames it onto the target with ``os.replace`` (atomic on POSIX and
  Windows), after adding a SHA-256 ``"checksum"`` of the contents (``state_checksum``).
* ``load_checkpoint`` reads with ``torch.load(..., weights_only=True)``, so no code from the
  file is ever run, checks the required keys and verifies the checksum (files without one
  load as they are).

The VAE's files (``vae_training.save_vae`` / ``load_vae``) and the amortizers
(``amortized.fit_amortized`` / ``load_amortized``) both go through these two functions.
"""

from __future__ import annotations

import glob
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["CheckpointError", "state_checksum", "file_sha256", "save_checkpoint", "load_checkpoint",
           "check_writable"]

class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be used (truncated, corrupt, not a checkpoint of
    the expected kind, or not matching its own configuration)."""


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (ties saved results to the checkpoint they came from)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def state_checksum(state: dict[str, Any]) -> str:
    """SHA-256 of everything in a checkpoint dict except its ``"checksum"`` entry: the bytes,
    dtype and shape of every tensor and the repr of every other value, in the dict's order.

    ``torch.load`` does not notice a changed byte inside a tensor's data; this does.
    """
    digest = hashlib.sha256()

    def visit(value: Any) -> None:
        if isinstance(value, Tensor):
            flat = value.detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"T{flat.dtype}{tuple(value.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            digest.update(f"D{len(value)}".encode())
            for key, item in value.items():
                visit(key)
                visit(item)
        elif isinstance(value, (list, tuple)):
            digest.update(f"L{len(value)}".encode())
            for item in value:
                visit(item)
        else:
            digest.update(f"{type(value).__name__}:{value!r};".encode())

    visit({key: value for key, value in state.items() if key != "checksum"})
    return digest.hexdigest()


def check_writable(path: str | os.PathLike) -> None:
    """Raise ``ValueError`` now, not at the first checkpoint, if ``path`` cannot be written."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent, prefix=path.name + ".", suffix=".probe"):
            pass
    except OSError as error:
        raise ValueError(
            f"checkpoint_path {path} is not writable ({type(error).__name__}: {error}); "
            "expected a file path in a folder that can be created and written"
        ) from None
    if path.is_dir():
        raise ValueError(f"checkpoint_path {path} is a folder; expected a file path")


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``state`` with ``torch.save`` atomically, with a checksum.

    The dict, plus a ``"checksum"`` entry (``state_checksum``), goes to a temporary file in the
    same folder, which is flushed to disk and then renamed onto ``path`` with ``os.replace``: a
    crash mid-write never leaves a truncated checkpoint. Temporary files left by earlier
    writers of ``path`` that were killed mid-write are removed (one process writes a given path
    at a time).

    Args:
        state: tensors, dicts, lists and plain Python values (what ``weights_only`` loads).
        path: the target file; its folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {**state, "checksum": state_checksum(state)}
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".partial")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp's 0600 -> the usual mode of a new file
        with os.fdopen(handle, "wb") as tmp:
            torch.save(state, tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    for stale in path.parent.glob(glob.escape(path.name) + ".*.partial"):
        try:
            stale.unlink()
        except OSError:
            pass


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    required: tuple[str, ...] = ("model",)) -> dict[str, Any]:
    """Open a checkpoint with ``torch.load(..., weights_only=True)`` (no code is unpickled) and
    verify its ``"checksum"`` (files without one load as they are).

    Args:
        path: the file. map_location: device of the loaded tensors.
        required: keys the checkpoint must have (a VAE's: "model" and "config").

    Returns:
        the checkpoint dict, including its ``"checksum"`` entry when it has one.

    Raises:
        FileNotFoundError: no file at ``path`` (the message says how to make one).
        ValueError: ``map_location`` names a device this machine does not have.
        CheckpointError: the file is truncated, corrupt (checksum mismatch) or not a dict
            checkpoint with the ``required`` keys.
    """
    device = torch.device(map_location) if isinstance(map_location, (str, torch.device)) else None
    if device is not None and device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"map_location={str(map_location)!r} but no CUDA device is available here; "
            "expected map_location='cpu' (or a device this machine has)")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: {path}. Train the model to create it (the notebooks do this "
            "when retrain=True or the file is missing), or restore the committed file with "
            f"`git checkout -- {path.name}` in its folder.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure to unpickle means a bad file
        raise CheckpointError(
            f"checkpoint {path} could not be read ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}). The file is truncated or "
            "corrupt: delete it and retrain, or restore it from git."
        ) from error
    if not isinstance(state, dict) or any(key not in state for key in required):
        raise CheckpointError(
            f"checkpoint {path} is not an nfutils checkpoint of this kind (expected a dict "
            f"with keys {list(required)}; found {type(state).__name__}"
            + (f" with keys {sorted(state)}" if isinstance(state, dict) else "") + ")")
    if "checksum" in state and state["checksum"] != state_checksum(state):
        raise CheckpointError(
            f"checkpoint {path} is corrupt: the checksum of its contents does not match the "
            "one stored when it was written. Delete it and retrain, or restore it from git.")
    return state
