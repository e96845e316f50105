from __future__ import annotations

import numpy as np
import pytest

from restore.data import (
    AWGN,
    JPEG,
    CameraNoise,
    Degradation,
    RainStreaks,
    awgn_benchmark_noise,
    degradation_from_spec,
    degrade_for_eval,
    eval_rng,
)
from restore.data.camera import poisson_gaussian_noise, srgb_to_linear
from restore.errors import RestoreError


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


def _natural_like(h: int = 96, w: int = 128, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Smooth shading + edges + mild texture: enough structure for JPEG and rain."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = 0.5 + 0.3 * np.sin(6 * xx + 3 * yy) * np.cos(4 * yy)
    base += 0.15 * ((xx > 0.4) & (yy < 0.5))
    img = np.stack([base * f for f in (1.0, 0.85, 0.7)][:channels], axis=-1)
    img += rng.normal(0, 0.02, img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


# --------------------------------------------------------------------------- AWGN
def test_awgn_std_matches_sigma_and_is_not_clipped():
    flat = np.full((256, 256, 1), 0.5, np.float32)
    noisy = AWGN(sigma=25)(flat, np.random.default_rng(0))
    assert noisy.dtype == np.float32 and noisy.shape == flat.shape
    assert abs((noisy - flat).std() / (25 / 255) - 1) < 0.02
    black = AWGN(sigma=50)(np.zeros((32, 32, 3), np.float32), np.random.default_rng(1))
    assert black.min() < 0  # benchmark protocol: no clipping


def test_awgn_range_draws_within_range_and_apply_uses_level():
    awgn = AWGN(sigma_range=(5, 50))
    rng = np.random.default_rng(0)
    levels = [awgn.sample_level(rng) for _ in range(300)]
    assert 5 <= min(levels) < 10 and 45 < max(levels) <= 50
    flat = np.full((128, 128, 1), 0.5, np.float32)
    noisy = awgn.apply(flat, 30.0, rng)
    assert abs((noisy - flat).std() / (30 / 255) - 1) < 0.03


def test_awgn_benchmark_noise_reproduces_numpy_seed0_protocol():
    clean = _natural_like(40, 30, channels=1)
    np.random.seed(0)
    reference = np.random.normal(0, 25 / 255.0, clean.shape[:2])  # DnCNN test script
    np.random.seed(0)
    assert np.array_equal(np.random.randn(40, 30) * (25 / 255.0), reference)
    expected = (clean[..., 0] + reference).astype(np.float32)  # float32 + float64 → cast
    out = awgn_benchmark_noise(clean, 25)
    assert out.shape == clean.shape and out.dtype == np.float32
    assert np.array_equal(out[..., 0], expected)
    assert np.array_equal(awgn_benchmark_noise(clean[..., 0], 25), expected)  # H×W same as H×W×1


# --------------------------------------------------------------------------- JPEG
@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_psnr_increases_with_quality(channels):
    clean = _natural_like(channels=channels)
    psnrs = [_psnr(JPEG(quality=q)(clean, np.random.default_rng(0)), clean) for q in (10, 30, 60, 90)]
    assert psnrs == sorted(psnrs) and psnrs[0] < psnrs[-1] - 3
    out = JPEG(quality=20)(clean, np.random.default_rng(0))
    assert out.shape == clean.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1


def test_jpeg_range_draws_integer_qualities():
    jpeg, rng = JPEG(quality_range=(10, 12)), np.random.default_rng(0)
    assert {jpeg.sample_level(rng) for _ in range(50)} == {10.0, 11.0, 12.0}


# --------------------------------------------------------------------------- camera
def test_poisson_gaussian_variance_is_signal_dependent():
    raw = np.repeat(np.array([0.05, 0.8], np.float32), 20000).reshape(2, 20000)
    noisy = poisson_gaussian_noise(raw, shot=0.01, read=1e-4, rng=np.random.default_rng(0))
    var = (noisy - raw).var(axis=1)
    np.testing.assert_allclose(var, [0.01 * 0.05 + 1e-4, 0.01 * 0.8 + 1e-4], rtol=0.05)


def test_camera_noise_is_stronger_in_bright_regions_in_linear_light():
    # In sRGB the gamma curve compresses highlights, so compare in linear light, where
    # shot noise (variance ∝ signal) dominates.
    clean = np.full((48, 96, 3), 0.2, np.float32)
    clean[:, 48:] = 0.8
    for seed in range(3):
        out = CameraNoise()(clean, np.random.default_rng(seed))
        resid = srgb_to_linear(out) - srgb_to_linear(clean)
        dark, bright = resid[4:-4, 4:44].var(), resid[4:-4, 52:-4].var()
        assert bright > 1.5 * dark


def test_camera_noise_shapes_odd_sizes_gray_and_alignment():
    clean = _natural_like(37, 51)
    out = CameraNoise()(clean, np.random.default_rng(0))
    assert out.shape == clean.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    gray = CameraNoise(jpeg=True)(clean[..., :1], np.random.default_rng(0))
    assert gray.shape == (37, 51, 1)
    # noise-free round trip returns the clean image: the target is aligned (no demosaic blur)
    quiet = CameraNoise(shot_range=(1e-12, 1e-12))(clean, np.random.default_rng(0))
    assert _psnr(quiet, clean) > 60
    with pytest.raises(RestoreError):
        CameraNoise()(clean[..., :2], np.random.default_rng(0))


# --------------------------------------------------------------------------- rain
def test_rain_only_adds_brightness_and_heavy_adds_more():
    clean = _natural_like(96, 128)
    added = {}
    for preset in ("light", "heavy", "torrent", "textured", "downpour", "mix", "any", "all", "wide"):
        outs = [RainStreaks(preset)(clean, np.random.default_rng(s)) for s in range(3)]
        for out in outs:
            assert out.shape == clean.shape and out.dtype == np.float32
            assert np.all(out >= clean - 1e-6) and out.max() <= 1
        added[preset] = np.mean([o - clean for o in outs])
    assert 0 < added["light"] < added["heavy"] / 3
    assert 0 < added["light"] < added["torrent"] / 3
    assert 0 < added["light"] < added["textured"] / 3
    assert 0 < added["light"] < added["downpour"] / 3


def test_mixtures_draw_every_style_they_name():
    """`mix` keeps its two styles (runs trained on it stay reproducible); `any` adds torrent,
    `all` textured, `wide` downpour."""
    from restore.data.rain import _MIXES

    clean = _natural_like(48, 48)

    def styles_drawn(mixture: str) -> set[str]:
        styles, drawn = _MIXES[mixture], set()
        for seed in range(30):
            rng = np.random.default_rng(seed)
            style = styles[int(rng.integers(len(styles)))]
            # the mixture spends that one draw on the style, then rains exactly like it
            out = RainStreaks(mixture)(clean, np.random.default_rng(seed))
            assert np.array_equal(out, RainStreaks(style)(clean, rng))
            drawn.add(style)
        return drawn

    assert styles_drawn("mix") == {"light", "heavy"}
    assert styles_drawn("any") == {"light", "heavy", "torrent"}
    assert styles_drawn("all") == {"light", "heavy", "torrent", "textured"}
    assert styles_drawn("wide") == {"light", "heavy", "torrent", "downpour"}


def test_textured_streaks_vary_in_brightness_along_their_length(monkeypatch):
    """What `textured` adds over `torrent`: a torrent streak is one stroke of even
    brightness, a textured one is averaged from noise drops, so its brightness changes
    along it. Measured on vertical streaks: along a column, the rain varies relatively more."""
    from dataclasses import replace

    import restore.data.rain as rain

    clean = np.zeros((200, 200, 3), np.float32)

    def along_variation(preset: str) -> float:
        columns = []
        for seed in range(4):
            d = RainStreaks(preset)(clean, np.random.default_rng(seed))[..., 0]
            bright = d[:, d.mean(axis=0) > np.percentile(d.mean(axis=0), 90)]  # the streakiest columns
            columns.append(bright.std(axis=0).mean() / bright.mean())
        return float(np.mean(columns))

    for style in ("torrent", "textured"):  # vertical and single-layer, so a column follows a streak
        monkeypatch.setitem(rain._STYLES, style, replace(rain._STYLES[style], max_angle=0, angle_spread=0, layers=(1, 1)))
    assert along_variation("textured") > 1.3 * along_variation("torrent")


def test_downpour_spreads_the_amount_of_rain_wider_than_textured():
    """Rain100H's per-image amount of rain runs from 0.10 (p5) to 0.37 (p95); `downpour`
    exists to reach its heavy end, which `textured` stops short of."""
    clean = _natural_like(96, 128)

    def amounts(preset: str) -> np.ndarray:
        return np.array([(RainStreaks(preset)(clean, np.random.default_rng(s)) - clean).mean() for s in range(40)])

    textured, downpour = amounts("textured"), amounts("downpour")
    assert np.percentile(downpour, 95) > np.percentile(textured, 95) + 0.03
    assert np.percentile(downpour, 5) < np.percentile(textured, 5) + 0.02


@pytest.mark.parametrize("preset", ["torrent", "textured", "downpour"])
def test_heavy_rain_styles_match_rain100h_residual_statistics(shared_dir, preset):
    """The torrent, textured and downpour styles were calibrated against Rain100H's rain − clean
    residual (mean 0.21, fraction of pixels brighter by more than 0.1: 0.69, input PSNR
    12.1 dB over its 100 pairs); over BSD200 backgrounds they must stay close to those."""
    from PIL import Image

    files = sorted((shared_dir / "data/train/BSD200").glob("*.png"))[:12]
    means, covers, psnrs = [], [], []
    for i, f in enumerate(files):
        clean = np.asarray(Image.open(f), dtype=np.float32) / 255
        rainy = RainStreaks(preset)(clean, np.random.default_rng(i))
        residual = (rainy - clean).mean(axis=2)
        means.append(residual.mean())
        covers.append((residual > 0.1).mean())
        psnrs.append(_psnr(rainy, clean))
    assert 0.16 < np.mean(means) < 0.26
    assert 0.55 < np.mean(covers) < 0.80
    assert 10.5 < np.mean(psnrs) < 14.0


def _smooth_235(n: int) -> bool:
    for p in (2, 3, 5):
        while n % p == 0:
            n //= p
    return n == 1


def test_rain_costs_three_ffts_per_layer_whatever_the_streaks(monkeypatch):
    """Rain is made on the fly for every training patch, so it must stay cheap (~0.07 s for
    heavy rain on 321×481 on an idle core). Checked by construction, not by the clock: each
    layer is 2 forward + 1 inverse real FFT on a canvas barely larger than the image, with
    FFT-friendly sides, however many, long or wide the streaks (no per-streak drawing, no
    direct convolution with a 100-pixel kernel)."""
    from restore.data.rain import streak_layer

    shapes = []

    def spy(name):
        real = getattr(np.fft, name)

        def counted(a, *args, **kwargs):
            shapes.append((name, kwargs.get("s") or a.shape))
            return real(a, *args, **kwargs)

        return counted

    for name in ("rfft2", "irfft2"):
        monkeypatch.setattr(np.fft, name, spy(name))

    h, w = 321, 481
    canvases = []
    for density, length, width in ((0.001, 20, 1.0), (0.01, 20, 1.0), (0.003, 112, 4.0)):
        shapes.clear()
        layer = streak_layer(h, w, density=density, length=length, width=width, angle=15, blur=1.0,
                             rng=np.random.default_rng(0))
        assert layer.shape == (h, w) and layer.max() > 0
        assert sorted(n for n, _ in shapes) == ["irfft2", "rfft2", "rfft2"]
        (fh, fw), = {tuple(s) for _, s in shapes}  # one canvas for all three
        assert _smooth_235(fh) and _smooth_235(fw)
        # the image plus the kernel, rounded up to a fast length (at most ~7 % more here)
        assert h < fh <= 1.1 * (h + length + 2 * width + 2) and w < fw <= 1.1 * (w + length + 2 * width + 2)
        canvases.append((fh, fw))
    assert canvases[0] == canvases[1]  # ten times the streaks, the same work

    clean = np.random.default_rng(0).random((h, w, 3), dtype=np.float32)
    for seed in range(3):
        shapes.clear()
        RainStreaks("heavy")(clean, np.random.default_rng(seed))
        assert len(shapes) in (6, 9, 12)  # 2–4 layers, three transforms each
        assert all(fh * fw < 2 * h * w for _, (fh, fw) in shapes)
    for seed in range(3):  # textured: noise, its blur, then the motion blur (two products)
        shapes.clear()
        RainStreaks("textured")(clean, np.random.default_rng(seed))
        assert len(shapes) in (10, 15, 20)  # 2–4 layers, five transforms each
        assert all(fh * fw < 2 * h * w for _, (fh, fw) in shapes)


# --------------------------------------------------------------------------- specs / eval
@pytest.mark.parametrize(
    ("spec", "setting", "kind"),
    [
        ("awgn:25", "awgn-s25", AWGN),
        ("AWGN:0-75", "awgn-s0-75", AWGN),
        ("awgn:12.5", "awgn-s12.5", AWGN),
        ("jpeg:20", "jpeg-q20", JPEG),
        ("jpeg:10-90", "jpeg-q10-90", JPEG),
        ("rain", "rain-mix", RainStreaks),
        ("rain:heavy", "rain-heavy", RainStreaks),
        ("rain:light", "rain-light", RainStreaks),
        ("rain:torrent", "rain-torrent", RainStreaks),
        ("rain:any", "rain-any", RainStreaks),
        ("rain:textured", "rain-textured", RainStreaks),
        ("rain:all", "rain-all", RainStreaks),
        ("camera", "camera", CameraNoise),
        ("camera:jpeg", "camera-jpeg", CameraNoise),
    ],
)
def test_spec_parsing(spec, setting, kind):
    deg = degradation_from_spec(spec)
    assert isinstance(deg, kind) and isinstance(deg, Degradation)
    assert deg.setting() == setting


@pytest.mark.parametrize(
    "spec",
    ["awgn", "awgn:abc", "awgn:50-10", "jpeg:0", "jpeg:10.5", "jpeg:5-101", "rain:drizzle", "camera:raw", "blur:3", ""],
)
def test_bad_specs_raise(spec):
    with pytest.raises(RestoreError):
        degradation_from_spec(spec)


@pytest.mark.parametrize("spec", ["awgn:0-50", "jpeg:10-40", "rain", "camera:jpeg"])
def test_eval_degradation_is_deterministic_per_name(spec):
    clean, deg = _natural_like(48, 64), degradation_from_spec(spec)
    a1 = degrade_for_eval(clean, "img1", deg)
    a2 = degrade_for_eval(clean, "img1", deg)
    assert np.array_equal(a1, a2)
    if spec.startswith("jpeg"):
        return  # a different name may draw the same quality
    assert not np.array_equal(a1, degrade_for_eval(clean, "img2", deg))


def test_eval_rng_is_stable_and_fixed_sigma_uses_benchmark_noise():
    assert eval_rng("a", "awgn-s25").integers(1 << 30) == eval_rng("a", "awgn-s25").integers(1 << 30)
    assert eval_rng("a", "awgn-s25").random() != eval_rng("a", "awgn-s50").random()
    # sha256 + PCG64: the same on every machine and run (pinned value)
    assert eval_rng("01", "rain-heavy").integers(1 << 30) == 229098631
    clean = _natural_like(20, 24, channels=1)
    assert np.array_equal(degrade_for_eval(clean, "x", AWGN(sigma=25)), awgn_benchmark_noise(clean, 25))
