"""CropDataset: deterministic crops, shared channels, padding, disjoint DDP rank sharding."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from data_helpers import noise_audio, write_wav

from mcrave.cli.prepare import main as prepare_main
from mcrave.data.dataset import CropDataset
from mcrave.data.manifest import ManifestError

CROP = 4096


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Stereo files whose R channel is exactly -0.5 x L (so channel sharing is checkable)."""
    root = tmp_path_factory.mktemp("ds")
    for i, seconds in enumerate([0.5, 1.0, 0.05, 0.8, 0.6]):  # 0.05 s < one crop
        mono = noise_audio(seconds, 1, seed=i)
        write_wav(root / "in" / f"f{i}.wav", np.hstack([mono, -0.5 * mono]))
    args = ["prepare", str(root / "in"), "-o", str(root / "ds"), "--channels", "2", "-q"]
    assert prepare_main([*args, "--valid-fraction", "0"]) == 0
    return root / "ds"


def test_crops_are_a_pure_function_of_seed_epoch_index(dataset):
    ds = CropDataset(dataset, "train", CROP, seed=5, augment=True)
    assert len(ds) == sum(f["frames"] for f in ds.files) // CROP
    again = pickle.loads(pickle.dumps(CropDataset(dataset, "train", CROP, seed=5, augment=True)))
    for epoch, index in [(0, 0), (3, 7), (1, len(ds) - 1)]:
        x = ds.crop(epoch, index)
        assert x.shape == (2, CROP) and x.dtype == np.float32
        np.testing.assert_array_equal(x, again.crop(epoch, index))
        np.testing.assert_array_equal(x, ds[(epoch, index)])
    assert not np.array_equal(ds.crop(0, 1), ds.crop(1, 1))
    other = CropDataset(dataset, "train", CROP, seed=6, augment=True)
    assert not np.array_equal(ds.crop(0, 1), other.crop(0, 1))
    with pytest.raises(IndexError):
        ds.crop(0, len(ds))


def test_crop_is_the_shard_slice_and_augmentation_is_shared(dataset):
    plain = CropDataset(dataset, "train", CROP, seed=1)
    aug = CropDataset(dataset, "train", CROP, seed=1, augment=True)
    changed = 0
    for index in range(len(plain)):
        file, start, _ = plain.locate(2, index)
        entry = plain.files[file]
        shard = np.load(dataset / entry["shard"], mmap_mode="r")
        expected = np.zeros((CROP, 2), np.float32)
        part = shard[start : start + CROP]
        expected[: len(part)] = part
        x = plain.crop(2, index)
        np.testing.assert_array_equal(x, expected.T)
        y = aug.crop(2, index)
        np.testing.assert_allclose(y[1], -0.5 * y[0], atol=1e-6)  # same transform on every channel
        assert np.abs(y).max() <= 0.99 + 1e-6
        changed += not np.allclose(y, x)
    assert changed == len(plain)


def test_short_files_are_padded_or_skipped(dataset):
    padded = CropDataset(dataset, "train", CROP, seed=0)
    (short,) = [i for i, f in enumerate(padded.files) if f["frames"] < CROP]
    draws = ((e, i) for e in range(50) for i in range(len(padded)))
    epoch, index = next((e, i) for e, i in draws if padded.locate(e, i)[0] == short)
    x, frames = padded.crop(epoch, index), padded.files[short]["frames"]
    assert padded.locate(epoch, index)[1] == 0
    assert np.all(x[:, frames:] == 0) and np.all(x[:, :frames] != 0)
    skipping = CropDataset(dataset, "train", CROP, seed=0, short="skip")
    assert all(f["frames"] >= CROP for f in skipping.files)
    assert len(skipping.files) == len(padded.files) - 1
    with pytest.raises(ManifestError):
        CropDataset(dataset, "train", 10 * 44100, short="skip")
    with pytest.raises(ManifestError):
        CropDataset(dataset, "valid", CROP)  # --valid-fraction 0: no valid files


@pytest.mark.parametrize("world", [1, 2, 3])
def test_rank_indices_are_disjoint_equal_and_deterministic(dataset, world):
    ds = CropDataset(dataset, "train", CROP, seed=9, crops_per_epoch=100)
    for epoch in (0, 1):
        parts = [ds.epoch_indices(epoch, r, world) for r in range(world)]
        assert {len(p) for p in parts} == {100 // world}
        joined = np.concatenate(parts)
        assert len(set(joined.tolist())) == len(joined) and joined.min() >= 0 and joined.max() < 100
        for r in range(world):
            np.testing.assert_array_equal(parts[r], ds.epoch_indices(epoch, r, world))
    assert not np.array_equal(ds.epoch_indices(0, 0, world), ds.epoch_indices(1, 0, world))
    batch = ds.batch(0, ds.epoch_indices(0, 0, world)[:4])
    assert batch.shape == (4, 2, CROP)
    with pytest.raises(ValueError):
        ds.epoch_indices(0, world, world)
