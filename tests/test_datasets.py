from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from restore.data import (
    RAIN100H_BACKGROUND_IDS,
    EvalSet,
    PairedFolder,
    PatchDataset,
    awgn_benchmark_noise,
    exclude_rain_backgrounds,
    list_images,
    rain100l_pairing,
    split_train_arch_val,
    split_two,
)
from restore.data.datasets import _load_clean, readable_images, skipped_report
from restore.data.symmetry import ALL_TRANSFORMS, UPRIGHT_TRANSFORMS
from restore.errors import RestoreError


def _write(path: Path, h: int, w: int, channels: int = 1, seed: int = 0) -> Path:
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)
    Image.fromarray(arr[..., 0] if channels == 1 else arr).save(path)
    return path


@pytest.fixture
def gray_folder(tmp_path: Path) -> Path:
    for i in range(4):
        _write(tmp_path / f"img{i}.png", 48 + 8 * i, 40, seed=i)
    return tmp_path


# --------------------------------------------------------------------------- files
def test_list_images_sorts_naturally_and_excludes(tmp_path):
    for name in ("b-10.png", "b-2.png", "a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b-2.png", "b-10.png"]
    assert [p.name for p in list_images(tmp_path, exclude={"a", "b-10.png"})] == ["b-2.png"]


def test_list_images_errors(tmp_path):
    with pytest.raises(RestoreError, match="not found"):
        list_images(tmp_path / "missing")
    with pytest.raises(RestoreError, match="no images in"):
        list_images(tmp_path)


def test_load_clean_converts_channels(tmp_path):
    rgb = _write(tmp_path / "c.png", 8, 6, channels=3)
    arr = np.asarray(Image.open(rgb), dtype=np.float32) / 255
    assert _load_clean(rgb, 3).shape == (8, 6, 3)
    np.testing.assert_allclose(_load_clean(rgb, 1)[..., 0], arr @ [0.299, 0.587, 0.114], atol=1e-6)
    gray = _load_clean(_write(tmp_path / "g.png", 8, 6), 3)
    assert gray.shape == (8, 6, 3) and np.array_equal(gray[..., 0], gray[..., 2])
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp_path / "deep.png")  # 16-bit
    assert _load_clean(tmp_path / "deep.png", 1).max() == 1.0


# --------------------------------------------------------------------------- PatchDataset
def test_patch_dataset_shapes_and_noise_map(gray_folder):
    ds = PatchDataset(gray_folder, patch=32, channels=1, degradation="awgn:25", length=5)
    assert len(ds) == 5
    degraded, clean = ds[0]
    assert degraded.shape == clean.shape == (1, 32, 32) and degraded.dtype == torch.float32
    assert 0.05 < (degraded - clean).std() < 0.15

    ds = PatchDataset(gray_folder, patch=32, channels=3, degradation="awgn:0-50", noise_map=True)
    levels = set()
    for i in range(len(ds)):
        degraded, clean = ds[i]
        assert degraded.shape == (4, 32, 32) and clean.shape == (3, 32, 32)
        sigma_map = degraded[3]
        assert torch.all(sigma_map == sigma_map[0, 0]) and 0 <= sigma_map[0, 0] * 255 <= 50
        levels.add(float(sigma_map[0, 0]))
    assert len(levels) == len(ds)

    fixed = PatchDataset(gray_folder, patch=16, channels=1, degradation="awgn:25", noise_map=True)
    assert torch.allclose(fixed[0][0][1], torch.full((16, 16), 25 / 255))


def test_patch_dataset_augmentation_changes_orientation(tmp_path):
    img = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(img).save(tmp_path / "ramp.png")
    x = img[..., None].astype(np.float32) / 255
    orientations = [np.rot90(x, k) for k in range(4)] + [np.rot90(x, k)[:, ::-1] for k in range(4)]
    ds = PatchDataset(tmp_path, patch=16, degradation="awgn:0", length=40)
    seen = set()
    for i in range(len(ds)):
        clean = ds[i][1][0].numpy()[..., None]
        matches = [k for k, o in enumerate(orientations) if np.array_equal(clean, o)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) >= 6
    plain = PatchDataset(tmp_path, patch=16, degradation="awgn:0", length=5, augment=False)
    assert all(np.array_equal(plain[i][1][0].numpy(), x[..., 0]) for i in range(5))


def test_patch_dataset_is_reproducible_and_order_independent(gray_folder):
    kw = dict(patch=24, channels=1, degradation="awgn:0-50", length=6, seed=3)
    a, b = PatchDataset(gray_folder, **kw), PatchDataset(gray_folder, cache=False, **kw)
    later = b[5]  # access order (or worker) must not matter
    for i in range(6):
        assert all(torch.equal(u, v) for u, v in zip(a[i], b[i]))
    assert torch.equal(a[5][0], later[0])
    first = a[0][0]
    a.set_epoch(1)
    assert not torch.equal(a[0][0], first)
    assert not torch.equal(PatchDataset(gray_folder, **{**kw, "seed": 4})[0][0], first)


@pytest.mark.parametrize("spec", ["jpeg:10-50", "rain", "camera:jpeg"])
def test_patch_dataset_other_degradations(gray_folder, spec):
    ds = PatchDataset(gray_folder, patch=32, channels=3, degradation=spec, length=2)
    degraded, clean = ds[1]
    assert degraded.shape == clean.shape == (3, 32, 32)


def test_patch_dataset_skips_small_and_unreadable(gray_folder):
    _write(gray_folder / "tiny.png", 10, 10)
    (gray_folder / "broken.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning) as record:
        ds = PatchDataset(gray_folder, patch=40, degradation="awgn:25")
    assert ds.skipped == 2 and len(ds.paths) == 4
    assert [p.name for p in ds.unreadable] == ["broken.png"] and [p.name for p in ds.too_small] == ["tiny.png"]
    assert any("tiny.png" in str(w.message) for w in record)
    assert any("broken.png" in str(w.message) for w in record)
    assert ds.skipped_report() == ["skipped 1 unreadable image(s): broken.png",
                                   "skipped 1 image(s) smaller than the 40×40 patch: tiny.png"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warn=False: the caller reports the skipped images itself
        quiet = PatchDataset(gray_folder, patch=40, degradation="awgn:25", warn=False)
    assert quiet.skipped_report() == ds.skipped_report()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to skip, nothing to warn about or report
        clean = PatchDataset(ds.paths, patch=8, degradation="awgn:25")
    assert clean.skipped == 0 and clean.skipped_report() == []


def test_skipped_report_lists_names_and_caps_long_lists():
    paths = [Path(f"/data/img{i:02d}.png") for i in range(13)]
    (line,) = skipped_report(paths)
    assert line == ("skipped 13 unreadable image(s): " + ", ".join(f"img{i:02d}.png" for i in range(10))
                    + ", … (+3 more)")
    assert skipped_report() == []


def test_readable_images_skips_and_stops_at_the_limit(gray_folder):
    (gray_folder / "img1.png").write_bytes((gray_folder / "img1.png").read_bytes()[:60])  # truncated
    paths = list_images(gray_folder)
    with pytest.warns(UserWarning, match="img1.png"):
        good, bad = readable_images(paths, limit=2)
    assert [p.name for p in good] == ["img0.png", "img2.png"] and [p.name for p in bad] == ["img1.png"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert readable_images(paths, limit=2, warn=False) == (good, bad)
    evaluation = EvalSet(good, "awgn:25", 1)  # a list of files instead of a folder
    assert [name for name, _, _ in evaluation] == ["img0", "img2"]


def test_patch_dataset_errors(gray_folder, tmp_path):
    too_big = "patch 128 is larger than every image in"
    with pytest.warns(UserWarning), pytest.raises(RestoreError, match=too_big):
        PatchDataset(gray_folder, patch=128, degradation="awgn:25")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"garbage")
    with pytest.warns(UserWarning), pytest.raises(RestoreError, match="no readable images"):
        PatchDataset(bad, patch=8, degradation="awgn:25")
    with pytest.raises(RestoreError, match="noise_map needs an AWGN"):
        PatchDataset(gray_folder, patch=8, degradation="jpeg:20", noise_map=True)
    with pytest.raises(RestoreError, match="channels"):
        PatchDataset(gray_folder, patch=8, channels=2, degradation="awgn:25")


def test_patch_dataset_on_train400(shared_dir):
    paths = list_images(shared_dir / "data/train/Train400")[:16]
    ds = PatchDataset(paths, patch=40, channels=1, degradation="awgn:0-55", noise_map=True, length=32)
    loader = torch.utils.data.DataLoader(ds, batch_size=8)
    degraded, clean = next(iter(loader))
    assert degraded.shape == (8, 2, 40, 40) and clean.shape == (8, 1, 40, 40)


# --------------------------------------------------------------------------- PairedFolder
def test_paired_folder_rain100l(shared_dir):
    root = shared_dir / "data/rain/Rain100L_subset10"
    ds = PairedFolder(root / "rain", root / "norain", pairing=rain100l_pairing)
    assert len(ds) == 10 and ds.names[0] == "rain-001"
    for rainy, clean in ds:
        assert rainy.shape == clean.shape and rainy.shape[0] == 3
        assert (rainy - clean).mean() >= -10 / 255
        assert torch.all(rainy >= clean - 10 / 255 - 1e-6)  # rain only adds brightness
    crops = PairedFolder(root / "rain", root / "norain", pairing=rain100l_pairing, patch=48, augment=UPRIGHT_TRANSFORMS)
    rainy, clean = crops[3]
    assert rainy.shape == clean.shape == (3, 48, 48)
    assert torch.all(rainy >= clean - 10 / 255 - 1e-6)  # the crops are aligned


def test_paired_folder_augments_with_the_given_transforms_only(tmp_path):
    # A pair is transformed after it was degraded: drawing a quarter turn would turn its
    # rain horizontal. With the upright transforms a vertical streak stays a full column.
    (tmp_path / "rain").mkdir()
    (tmp_path / "norain").mkdir()
    streak = np.zeros((32, 32), np.uint8)
    streak[:, 9] = 255
    Image.fromarray(streak).save(tmp_path / "rain" / "a.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "norain" / "a.png")
    for augment, looks in ((UPRIGHT_TRANSFORMS, 2), (ALL_TRANSFORMS, 4), ((), 1)):
        ds = PairedFolder(tmp_path / "rain", tmp_path / "norain", channels=1, augment=augment)
        vertical, drawn = [], set()
        for epoch in range(40):
            ds.set_epoch(epoch)
            rainy = ds[0][0][0]
            vertical.append(bool((rainy == 1).all(dim=0).any()))
            drawn.add(rainy.numpy().tobytes())
        assert all(vertical) == (augment != ALL_TRANSFORMS)
        assert len(drawn) == looks  # upright: columns 9 and 22; all 8: rows 9 and 22 too


@pytest.mark.parametrize("augment", [True, (0, 8), "all"])
def test_paired_folder_rejects_augment_without_transforms(tmp_path, augment):
    (tmp_path / "rain").mkdir()
    (tmp_path / "norain").mkdir()
    _write(tmp_path / "rain" / "a.png", 8, 8)
    _write(tmp_path / "norain" / "a.png", 8, 8)
    with pytest.raises(RestoreError, match="UPRIGHT_TRANSFORMS for rain"):
        PairedFolder(tmp_path / "rain", tmp_path / "norain", augment=augment)


def test_paired_folder_rain100h_same_name(shared_dir):
    root = shared_dir / "data/rain/Rain100H"
    ds = PairedFolder(root / "rain", root / "norain", channels=1)
    assert len(ds) == 100 and ds[0][0].shape[0] == 1


def test_paired_folder_missing_partner(tmp_path):
    (tmp_path / "rain").mkdir()
    (tmp_path / "norain").mkdir()
    for name in ("a.png", "b.png"):
        _write(tmp_path / "rain" / name, 8, 8)
    _write(tmp_path / "norain" / "a.png", 8, 8)
    with pytest.raises(RestoreError, match="no clean partner for b.png"):
        PairedFolder(tmp_path / "rain", tmp_path / "norain")
    with pytest.raises(RestoreError, match="rain-001"):
        rain100l_pairing("a.png")


# --------------------------------------------------------------------------- EvalSet
def test_eval_set_is_deterministic(gray_folder):
    awgn = EvalSet(gray_folder, "awgn:25", channels=1)
    name, degraded, clean = awgn[0]
    assert name == "img0" and degraded.shape == clean.shape == (48, 40, 1)
    assert np.array_equal(degraded, awgn_benchmark_noise(clean, 25))
    rain = EvalSet(gray_folder, "rain:heavy", channels=3)
    first, second = list(rain), list(rain)
    assert len(first) == 4
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(first, second))


# --------------------------------------------------------------------------- splits
def test_split_train_arch_val():
    paths = [Path(f"d/{i:03d}.png") for i in range(400)]
    w, a, v = split_train_arch_val(paths, seed=0)
    assert (len(w), len(a), len(v)) == (196, 196, 8)
    assert set(w) | set(a) | set(v) == set(paths)
    assert not (set(w) & set(a) or set(w) & set(v) or set(a) & set(v))
    assert (w, a, v) == split_train_arch_val(list(reversed(paths)), seed=0)  # order-independent
    assert split_train_arch_val(paths, seed=1) != (w, a, v)
    assert [len(s) for s in split_train_arch_val(paths[:10])] == [5, 4, 1]  # val at least 1
    with pytest.raises(RestoreError):
        split_train_arch_val(paths[:2])


def test_split_two():
    paths = [Path(f"{i}.png") for i in range(91)]
    a, b = split_two(paths, seed=0)
    assert (len(a), len(b)) == (46, 45) and not set(a) & set(b) and set(a) | set(b) == set(paths)
    assert split_two(paths, seed=0) == (a, b)


# --------------------------------------------------------------------------- rain overlap
def test_rain100h_backgrounds_excluded_from_bsd200(shared_dir):
    bsd200 = list_images(shared_dir / "data/train/BSD200")
    kept = exclude_rain_backgrounds(bsd200)
    assert len(bsd200) == 200 and len(kept) == 133
    assert {p.stem for p in bsd200} - {p.stem for p in kept} == RAIN100H_BACKGROUND_IDS
