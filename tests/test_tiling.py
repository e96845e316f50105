from __future__ import annotations

import math
import weakref

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from restore.errors import RestoreError
from restore.runtime.backends import Backend, TorchBackend, resolve_device
from restore.runtime.tiling import TileConfig, count_tiles, restore_tensor, tile_starts

SIZES = [(37, 53), (64, 64), (130, 97), (200, 300)]


def conv_stack(c_in: int, c_out: int, n_convs: int = 3, k: int = 3, seed: int = 0) -> nn.Module:
    """Zero-padded k×k convs: receptive-field radius n_convs·(k//2)."""
    torch.manual_seed(seed)
    chans = [c_in] + [6] * (n_convs - 1) + [c_out]
    layers: list[nn.Module] = []
    for a, b in zip(chans, chans[1:]):
        layers += [nn.Conv2d(a, b, k, padding=k // 2), nn.GELU()]
    return nn.Sequential(*layers[:-1]).eval()


def image(c: int, h: int, w: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(1, c, h, w, generator=torch.Generator().manual_seed(seed))


def whole(fn, x, **kw):
    return restore_tensor(fn, x, config=TileConfig(tile=None), **kw)


# --- exactness for receptive field <= margin ---------------------------------------------


@pytest.mark.parametrize("channels", [(1, 1), (3, 3), (4, 3)], ids=["gray", "rgb", "4to3"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_tiled_equals_whole_for_small_receptive_field(channels, size):
    c_in, c_out = channels
    net = conv_stack(c_in, c_out)  # radius 3 <= default margin 16 // 4
    x = image(c_in, *size)
    ref = whole(net, x)
    assert ref.shape == (1, c_out, *size)
    several = count_tiles(*size, TileConfig(tile=64)) > 1
    for bs in (1, 5, 16) if several else (16,):  # batching only matters with several tiles
        cfg = TileConfig(tile=64, overlap=16, batch_size=bs)
        out = restore_tensor(net, x, config=cfg, out_channels=c_out)
        assert out.shape == ref.shape
        assert (out - ref).abs().max().item() <= 1e-5


def cross_taps(r: int):
    """y(p) = x(p) + x(p ± r·e_x) + x(p ± r·e_y), zero-padded: receptive-field radius r."""

    def fn(batch):
        k = torch.zeros(1, 1, 2 * r + 1, 2 * r + 1)
        k[0, 0, r, :: 2 * r] = k[0, 0, :: 2 * r, r] = k[0, 0, r, r] = 1.0
        c = batch.shape[1]
        return F.conv2d(batch, k.expand(c, 1, -1, -1), padding=r, groups=c)

    return fn


@pytest.mark.parametrize("radius,margin", [(4, 4), (5, 4), (8, 8), (9, 8), (1, 0), (2, 1)])
def test_exact_iff_receptive_field_within_margin(radius, margin):
    fn = cross_taps(radius)
    x = image(3, 150, 170)
    cfg = TileConfig(tile=64, overlap=16, batch_size=8, margin=margin)
    err = (restore_tensor(fn, x, config=cfg) - whole(fn, x)).abs().max().item()
    if radius <= margin:
        assert err <= 1e-5
    else:  # the bound is tight: one pixel more and the tile edges leak in
        assert err > 1e-3


def test_every_pixel_has_positive_weight():
    from restore.runtime.tiling import _profile

    for tile, overlap in [(64, 16), (20, 16), (9, 8), (33, 2), (32, 0)]:
        for margin in range(overlap // 2 + 1):
            for length in range(tile + 1, 3 * tile + 7):
                starts = tile_starts(length, tile, overlap)
                total = torch.zeros(length)
                for s in starts:
                    total[s : s + tile] += _profile(tile, overlap, margin, s > 0, s + tile < length)
                assert total.min() > 0, (tile, overlap, margin, length)


def test_image_smaller_than_tile_is_one_tile():
    assert count_tiles(37, 53, TileConfig(tile=64)) == 1
    assert count_tiles(37, 300, TileConfig(tile=64, overlap=16)) == len(tile_starts(300, 64, 16))
    assert count_tiles(1000, 1000, TileConfig(tile=None)) == 1


def test_tile_starts_cover_and_end_at_border():
    for length in (64, 65, 100, 112, 113, 300, 1001):
        starts = tile_starts(length, 64, 16)
        assert starts[0] == 0 and starts[-1] == length - 64
        gaps = np.diff(starts)
        assert (gaps > 0).all() and (gaps <= 48).all()


# --- seams with a receptive field larger than the overlap --------------------------------


def box_blur(k: int = 15):
    def fn(batch):
        c = batch.shape[1]
        weight = torch.full((c, 1, k, k), 1.0 / (k * k))
        return F.conv2d(batch, weight, padding=k // 2, groups=c)  # zero padding: worst case

    return fn


def load_gray(path) -> torch.Tensor:
    from PIL import Image

    arr = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr)[None, None]


def seam_ratio(img: torch.Tensor, starts: list[int], tile: int) -> float:
    """Mean |horizontal+vertical gradient| on the tile-overlap bands over the mean elsewhere."""
    g = img[0, 0]
    gx = (g[:, 1:] - g[:, :-1]).abs()
    gy = (g[1:, :] - g[:-1, :]).abs()
    band = torch.zeros(g.shape[1] - 1, dtype=torch.bool)
    for a, b in zip(starts, starts[1:]):
        band[b - 1 : a + tile] = True  # where two tiles overlap (or meet)
    across_x = torch.cat([gx[:, band].flatten(), gy[band, :].flatten()])
    elsewhere = torch.cat([gx[:, ~band].flatten(), gy[~band, :].flatten()])
    return (across_x.mean() / elsewhere.mean()).item()


def test_no_seams_on_real_image(shared_dir):
    path = shared_dir / "data" / "test" / "Set12" / "01.png"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    x = load_gray(path)
    h, w = x.shape[-2:]
    assert h == w  # the band mask below is shared by both axes
    fn = box_blur(15)  # radius 7: larger than the margin (4), close to the overlap (16)
    cfg = TileConfig(tile=64, overlap=16, batch_size=8)
    tiled, ref = restore_tensor(fn, x, config=cfg), whole(fn, x)
    starts = tile_starts(h, 64, 16)

    # the metric does see seams: naive stitching of non-overlapping tiles
    naive = torch.zeros_like(x)
    for y0 in range(0, h, 64):
        for x0 in range(0, w, 64):
            naive[..., y0 : y0 + 64, x0 : x0 + 64] = fn(x[..., y0 : y0 + 64, x0 : x0 + 64])
    assert seam_ratio(naive, list(range(0, h, 64)), 64) > 1.5

    assert seam_ratio(tiled, starts, 64) < 1.15 * seam_ratio(ref, starts, 64)
    diff = (tiled - ref).abs()
    assert diff.mean().item() < 2e-3
    assert diff.max().item() < 0.05


# --- sizes, identity, bad configs ---------------------------------------------------------


@pytest.mark.parametrize("size", [(37, 53), (101, 77), (130, 97), (200, 123)])
@pytest.mark.parametrize("tile", [None, 60])
def test_size_multiple(size, tile):
    seen = []

    def fn(batch):
        seen.append(tuple(batch.shape[-2:]))
        assert batch.shape[-2] % 8 == 0 and batch.shape[-1] % 8 == 0
        return batch[:, :1] * 2

    x = image(3, *size)
    cfg = TileConfig(tile=tile, overlap=16)
    out = restore_tensor(fn, x, config=cfg, size_multiple=8)
    assert out.shape == (1, 1, *size)
    assert len(set(seen)) == 1  # one tile shape per image (batches stack)
    if tile is not None and min(size) >= 64:
        assert seen[0] == (64, 64)  # 60 rounded up to the multiple
    # content away from the padded border is untouched
    torch.testing.assert_close(out[..., : size[0] - 8, : size[1] - 8],
                               2 * x[:, :1, : size[0] - 8, : size[1] - 8])


@pytest.mark.parametrize("size", SIZES + [(1, 1), (5, 200)], ids=str)
@pytest.mark.parametrize("tile", [None, 32, 64])
def test_identity_is_exact(size, tile):
    x = image(3, *size)
    out = restore_tensor(lambda b: b.clone(), x, config=TileConfig(tile=tile, overlap=8))
    assert torch.equal(out, x)
    assert not out.is_inference()
    out.clamp_(0, 1)  # callers may modify the result in place


def test_size_multiple_with_tiny_image_replicates():
    # 3 px high, multiple 8: reflect cannot pad 5 px of a 3 px image
    x = image(1, 3, 5)
    out = restore_tensor(lambda b: b + 0, x, config=TileConfig(tile=64), size_multiple=8)
    assert torch.equal(out, x)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(tile=16, overlap=16), "tile size 16 must be larger than the overlap 16"),
        (dict(tile=8, overlap=16), "tile size 8 must be larger than the overlap 16"),
        (dict(overlap=-1), "overlap must be >= 0"),
        (dict(batch_size=0), "batch size must be >= 1"),
        (dict(overlap=16, margin=9), "margin 9 must be between 0 and half the overlap"),
        (dict(overlap=16, margin=-1), "margin -1"),
    ],
)
def test_bad_configs(kwargs, message):
    with pytest.raises(RestoreError, match=message):
        TileConfig(**kwargs)


def test_model_with_wrong_output_shape_raises():
    x = image(3, 100, 100)
    with pytest.raises(RestoreError, match="expected"):
        restore_tensor(lambda b: b[..., ::2, ::2], x, config=TileConfig(tile=64))
    with pytest.raises(RestoreError, match="expected"):
        restore_tensor(lambda b: b, x, config=TileConfig(tile=64), out_channels=1)


# --- memory, batching, progress, devices --------------------------------------------------


def test_batches_are_bounded_and_released():
    x = image(3, 300, 260)
    cfg = TileConfig(tile=64, overlap=16, batch_size=5)
    n_tiles = count_tiles(300, 260, cfg)
    assert n_tiles > 3 * cfg.batch_size
    sizes, inputs, outputs, alive = [], [], [], []

    def fn(batch):
        # how many earlier batches are still referenced by the runtime?
        alive.append(sum(r() is not None for r in inputs + outputs))
        sizes.append(batch.shape[0])
        y = batch * 1.0
        inputs.append(weakref.ref(batch))
        outputs.append(weakref.ref(y))
        return y

    progress = []
    out = restore_tensor(fn, x, config=cfg, progress=lambda d, t: progress.append((d, t)))
    assert torch.allclose(out, x)
    assert max(sizes) <= cfg.batch_size and sum(sizes) == n_tiles
    assert len(sizes) == math.ceil(n_tiles / cfg.batch_size)
    assert max(alive) <= 2  # at most the previous batch's input and output, never all tiles
    assert progress[-1] == (n_tiles, n_tiles)
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)


def test_multi_image_input_and_progress_total():
    x = torch.cat([image(1, 100, 90, seed=s) for s in range(3)])
    net = conv_stack(1, 1)
    cfg = TileConfig(tile=48, overlap=16, batch_size=4)
    progress = []
    out = restore_tensor(net, x, config=cfg, progress=lambda d, t: progress.append((d, t)))
    total = 3 * count_tiles(100, 90, cfg)
    assert progress[-1] == (total, total)
    for i in range(3):
        assert (out[i : i + 1] - whole(net, x[i : i + 1])).abs().max() <= 1e-5


def test_batches_are_sent_to_fn_device():
    class OnMeta:
        device = "meta"

        def __call__(self, batch):
            assert batch.device.type == "meta"
            return torch.zeros(batch.shape)  # a CPU result, as backends return

    out = restore_tensor(OnMeta(), image(1, 70, 70), config=TileConfig(tile=64))
    assert out.device.type == "cpu" and out.shape == (1, 1, 70, 70)
    seen = []
    restore_tensor(lambda b: seen.append(b.device.type) or torch.zeros(b.shape), image(1, 20, 20),
                   device="meta")
    assert seen == ["meta"]


# --- backends -----------------------------------------------------------------------------


def test_torch_backend_matches_module_and_tiles():
    net = conv_stack(4, 3)
    x = image(4, 100, 120)
    ref = net(x).detach()
    backend = TorchBackend(conv_stack(4, 3), device="cpu")
    assert isinstance(backend, Backend)
    assert backend.name == "torch" and backend.device == "cpu"
    assert "cpu" in backend.describe()
    y = backend(x)
    assert y.dtype == torch.float32 and y.device.type == "cpu" and y.is_contiguous()
    assert not y.is_inference() and not y.requires_grad
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    out = restore_tensor(backend, x, config=TileConfig(tile=64, overlap=16, batch_size=3))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_torch_backend_sets_eval_mode():
    net = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Dropout(0.9)).train()
    backend = TorchBackend(net, device="cpu")
    assert not backend.module.training
    x = image(1, 16, 16)
    assert torch.equal(backend(x), backend(x))


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(RestoreError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RestoreError, match="--device cuda requested but no CUDA GPU"):
            resolve_device("cuda")
        with pytest.raises(RestoreError):
            TorchBackend(nn.Identity(), device="cuda")


def test_a_model_tile_replaces_only_the_fallback():
    """`--tile` left out: the model's own tile (ModelEntry.tile); named: the user's, whatever the model says."""
    fallback = TileConfig(overlap=8, batch_size=4, model_default=True)
    chosen = fallback.for_model(128)
    assert (chosen.tile, chosen.overlap, chosen.batch_size, chosen.model_default) == (128, 8, 4, False)
    assert fallback.for_model(None) == fallback  # a model with no preference keeps the 64 fallback
    named = TileConfig(tile=96)
    assert named.for_model(128) is named
    whole = TileConfig(tile=None)
    assert whole.for_model(128) is whole
