"""Tiled patch inference with smooth, exact-where-possible blending.

`restore_tensor(fn, x, config=...)` runs a network `fn` (batch B×C×h×w → B×C_out×h×w)
over an image either in one piece (``tile=None``) or as overlapping tiles fed to `fn`
in batches, and stitches the tile outputs back together.

Tile layout (per axis, independently)
    Tiles are ``tile`` pixels long (rounded up to ``size_multiple``) on a stride of
    ``tile - overlap``; the last tile is shifted back so it ends exactly at the image
    border, so tiles never read past the image. When the image is shorter than one tile
    along an axis, the tile is shrunk to the image length (rounded up to
    ``size_multiple``) instead of padding the image to a full tile: a single tile then
    *is* the whole-image computation, which is cheaper and gives the same result as
    whole-image mode. Only then, and only by less than ``size_multiple``, is the image
    padded (reflect; replicate when the image is too small to reflect).

Blend window (separable, one 1-D profile per axis)
    Along an axis a tile edge is either an *image-border* edge or an *interior* edge.
    Next to an interior edge the profile is

        0                          for the first ``margin`` pixels,
        raised-cosine ramp (0, 1)  for the next ``overlap - margin`` pixels,
        1                          beyond;

    next to an image-border edge it is 1 (the tile saw the true border, so its output
    there is as good as the whole-image output). Requirements and guarantees:

    * ``0 <= margin <= overlap // 2``. Then every pixel has positive total weight: where
      one tile is in its zero margin, its neighbour (which overlaps it by at least
      ``overlap``) is at least ``overlap - margin >= margin`` pixels inside, i.e. on its
      strictly positive ramp.
    * **Exactness.** A tile's output at pixels at least ``r`` away from its interior
      edges equals the whole-image output for any model whose receptive-field radius is
      ``<= r``. Weights are zero within ``margin`` of interior edges, so for models with
      receptive-field radius ``<= margin`` the tiled output equals the whole-image output
      up to float rounding (and bit-exactly where a single tile contributes).
    * For models with a larger receptive field (most real networks), the ramp over
      ``overlap - margin`` pixels hides the seam. The default ``margin = overlap // 4``
      (4 px for the default 16 px overlap) keeps small conv stacks exact while leaving a
      12 px ramp for smooth blending; ``margin = overlap // 2`` is a hard mid-seam cut.

Stitching uses a running weighted mean ``out += (tile - out) · w / Σw`` rather than
``Σ(w·tile) / Σw``: identical tile outputs therefore blend to themselves bit-exactly
(an identity model returns its input unchanged), and the output buffer is a valid
partial image at every step.

Memory: the input, the output, one float32 weight-sum plane (H×W) and one batch of
``batch_size`` tiles (inputs and outputs) exist at once; tiles are cut lazily and the
window is built from two cached 1-D profiles, never as a full-size map.

The output is *not* clamped to [0, 1]; that is the caller's decision (the restorer
clamps before writing images).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import lru_cache

import torch
import torch.nn.functional as F

from restore.errors import RestoreError

__all__ = ["TileConfig", "count_tiles", "restore_tensor", "tile_starts"]

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class TileConfig:
    """How to cut an image into tiles.

    tile: tile side in pixels (rounded up to the model's size multiple), or None to run
        the whole image at once.
    overlap: pixels shared by neighbouring tiles.
    batch_size: tiles fed to the model per call.
    margin: pixels next to an interior tile edge that get zero weight (see the module
        docstring); None means ``overlap // 4``. Must be at most ``overlap // 2``.
    model_default: ``tile`` is only the fallback; `for_model` swaps in the tile a model
        prefers (`ModelEntry.tile`: a net trained on 128² patches scores better on 128² tiles).
    """

    tile: int | None = 64
    overlap: int = 16
    batch_size: int = 16
    margin: int | None = None
    model_default: bool = False  # the user named no tile: the model's own (`for_model`) replaces `tile`

    def __post_init__(self) -> None:
        if self.overlap < 0:
            raise RestoreError(f"tile overlap must be >= 0, got {self.overlap}")
        if self.tile is not None and self.tile <= self.overlap:
            raise RestoreError(
                f"tile size {self.tile} must be larger than the overlap {self.overlap}"
            )
        if self.batch_size < 1:
            raise RestoreError(f"tile batch size must be >= 1, got {self.batch_size}")
        if self.margin is not None and not 0 <= self.margin <= self.overlap // 2:
            raise RestoreError(
                f"tile margin {self.margin} must be between 0 and half the overlap "
                f"({self.overlap // 2})"
            )

    def for_model(self, model_tile: int | None) -> TileConfig:
        """This config with the model's preferred tile if the user named none."""
        if not self.model_default or model_tile is None:
            return self
        return replace(self, tile=model_tile, model_default=False)

    @property
    def zero_margin(self) -> int:
        return self.overlap // 4 if self.margin is None else self.margin


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _tile_len(length: int, config: TileConfig, size_multiple: int) -> int:
    """Tile length along one axis: the configured tile, or the (padded) image if shorter."""
    padded = _round_up(length, size_multiple)
    if config.tile is None:
        return padded
    return min(_round_up(config.tile, size_multiple), padded)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis; the last tile ends exactly at ``max(length, tile)``."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    n = math.ceil((length - tile) / stride) + 1
    return [min(i * stride, length - tile) for i in range(n)]


def count_tiles(h: int, w: int, config: TileConfig, size_multiple: int = 1) -> int:
    """Number of tiles (model inputs) for one H×W image; 1 in whole-image mode."""
    th, tw = _tile_len(h, config, size_multiple), _tile_len(w, config, size_multiple)
    return len(tile_starts(h, th, config.overlap)) * len(tile_starts(w, tw, config.overlap))


@lru_cache(maxsize=32)
def _profile(length: int, overlap: int, margin: int, ramp_start: bool, ramp_end: bool):
    """1-D blend profile of one tile; ramps only at interior (not image-border) edges."""
    w = torch.ones(length, dtype=torch.float64)
    ramp_len = overlap - margin
    # strictly inside (0, 1) so that every ramp pixel carries some weight
    k = torch.arange(1, ramp_len + 1, dtype=torch.float64)
    ramp = 0.5 - 0.5 * torch.cos(math.pi * k / (ramp_len + 1))
    edge = torch.cat([torch.zeros(margin, dtype=torch.float64), ramp])[:length]
    if ramp_start:
        w[: edge.numel()] *= edge
    if ramp_end:
        w[length - edge.numel():] *= edge.flip(0)
    return w.float()


def _pad_bottom_right(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Pad to h×w; reflect where possible (pad < size), else replicate."""
    for dim, target in ((-1, w), (-2, h)):
        pad = target - x.shape[dim]
        if pad > 0:
            mode = "reflect" if pad < x.shape[dim] else "replicate"
            pads = (0, pad, 0, 0) if dim == -1 else (0, 0, 0, pad)
            x = F.pad(x, pads, mode=mode)
    return x


def _check_output(y: torch.Tensor, batch: torch.Tensor, out_channels: int | None) -> None:
    n, _, h, w = batch.shape
    ok = y.ndim == 4 and y.shape[0] == n and y.shape[2:] == (h, w)
    if not ok or (out_channels is not None and y.shape[1] != out_channels):
        want = f"{n}×{out_channels or 'C'}×{h}×{w}"
        got = "×".join(map(str, y.shape))
        raise RestoreError(f"model returned a {got} tensor for a tile batch; expected {want}")


def restore_tensor(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    config: TileConfig = TileConfig(),
    size_multiple: int = 1,
    out_channels: int | None = None,
    progress: Progress | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Run `fn` over N×C×H×W image(s) `x` as `config` says; returns N×C_out×H×W float32 (CPU).

    `device` is where batches are sent before calling `fn` (default: ``fn.device`` if
    it has one, else the CPU); outputs are brought back to the CPU. `progress`, if
    given, is called as ``progress(done_tiles, total_tiles)`` after every batch. The
    output is not clamped.
    """
    if x.ndim != 4:
        raise ValueError(f"expected an N×C×H×W tensor, got shape {tuple(x.shape)}")
    if size_multiple < 1:
        raise ValueError(f"size_multiple must be >= 1, got {size_multiple}")
    device = torch.device(device if device is not None else getattr(fn, "device", "cpu"))
    x = x.detach().to("cpu", torch.float32)
    n, _, h, w = x.shape
    total = n * count_tiles(h, w, config, size_multiple)
    counter = _Counter(total, progress)
    first = _restore_one(fn, x[0:1], config, size_multiple, out_channels, device, counter)
    if n == 1:
        return first
    # filled image by image: a list of outputs plus torch.cat would hold the output twice
    out = torch.empty((n, *first.shape[1:]), dtype=torch.float32)
    out[0:1] = first
    del first
    for i in range(1, n):
        out[i : i + 1] = _restore_one(fn, x[i : i + 1], config, size_multiple, out_channels, device, counter)
    return out


class _Counter:
    """Tile progress across all images of a call."""

    def __init__(self, total: int, callback: Progress | None):
        self.done, self.total, self.callback = 0, total, callback

    def advance(self, k: int) -> None:
        self.done += k
        if self.callback is not None:
            self.callback(self.done, self.total)


def _run(fn, batch: torch.Tensor, device: torch.device, out_channels: int | None):
    with torch.inference_mode():
        y = fn(batch.to(device))
    _check_output(y, batch, out_channels)
    return y.to("cpu", torch.float32)


def _restore_one(fn, x, config, size_multiple, out_channels, device, counter) -> torch.Tensor:
    _, _, h, w = x.shape
    th, tw = _tile_len(h, config, size_multiple), _tile_len(w, config, size_multiple)
    # only pads when the image is shorter than one tile (and then by < size_multiple)
    xp = _pad_bottom_right(x, max(h, th), max(w, tw))
    hp, wp = xp.shape[-2:]
    if config.tile is None or (th == hp and tw == wp):
        # one tile covers everything: no blending needed
        y = _run(fn, xp, device, out_channels)
        counter.advance(1)
        # clone: drop the padding, and never hand an inference-mode tensor to the caller
        return y[..., :h, :w].clone() if (hp, wp) != (h, w) or y.is_inference() else y

    ys, xs = tile_starts(hp, th, config.overlap), tile_starts(wp, tw, config.overlap)
    out: torch.Tensor | None = None
    wsum = torch.zeros(hp, wp, dtype=torch.float32)
    for coords in _batches([(y0, x0) for y0 in ys for x0 in xs], config.batch_size):
        batch = torch.cat([xp[..., y0 : y0 + th, x0 : x0 + tw] for y0, x0 in coords])
        y = _run(fn, batch, device, out_channels if out is None else out.shape[1])
        if out is None:
            out = torch.zeros(1, y.shape[1], hp, wp, dtype=torch.float32)
        for tile_out, (y0, x0) in zip(y, coords):
            edges = (y0 > 0, y0 + th < hp, x0 > 0, x0 + tw < wp)
            weight = _window(th, tw, config.overlap, config.zero_margin, edges)
            _blend(out[0, :, y0 : y0 + th, x0 : x0 + tw], wsum[y0 : y0 + th, x0 : x0 + tw],
                   tile_out, weight)
        counter.advance(len(coords))
    assert out is not None
    return out[..., :h, :w].clone() if (hp, wp) != (h, w) else out


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@lru_cache(maxsize=64)
def _window(th: int, tw: int, overlap: int, margin: int, edges: tuple[bool, ...]) -> torch.Tensor:
    """th×tw weights of one tile; `edges` says which of top/bottom/left/right are interior."""
    top, bottom, left, right = edges
    wy = _profile(th, overlap, margin, top, bottom)
    wx = _profile(tw, overlap, margin, left, right)
    return wy[:, None] * wx[None, :]


def _blend(out: torch.Tensor, wsum: torch.Tensor, tile: torch.Tensor, weight: torch.Tensor):
    """Running weighted mean, in place on views of the output and weight-sum buffers."""
    wsum += weight
    # wsum >= weight, so the ratio is exactly 1 for the first contributor and 0 where the
    # weight is 0 (the clamp only avoids 0/0 where no tile has covered a pixel yet).
    # lerp_ is exact at ratio 1 and when tile == out.
    out.lerp_(tile, weight / wsum.clamp_min(1e-30))
