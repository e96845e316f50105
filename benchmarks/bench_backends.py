#!/usr/bin/env python
"""Inference backends side by side, on the same images.

For each network — the default model, a HiNAS-space net with DCN (`hinas_dcn.json` beside
this script) and the DnCNN-S peer (shared/peers, as a reference) — it runs PyTorch eager,
ONNX Runtime (both DCN export modes when the net has DCN layers) and TensorRT (when it is
installed with a GPU; otherwise a note says why it was skipped), and reports parameters,
FLOPs per megapixel, whole-image and tiled latency (median after warm-up), throughput,
the largest difference from PyTorch over all images, and PSNR on AWGN σ=25.

    python benchmarks/bench_backends.py                                  # Markdown to stdout
    python benchmarks/bench_backends.py --out docs/bench_backends.md     # + .json beside it
    python benchmarks/bench_backends.py --smoke                          # tiny and fast (CI)

Networks without shipped weights run with seeded random weights: their latency is real,
their PSNR is not (the table says which). Images: the first gray test images of
shared/data/test/Set12 (else the package's examples), centre crops of --size pixels.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runs from a checkout without installing

from restore.errors import RestoreError  # noqa: E402
from restore.export.onnx import has_dcn, module_in_channels, resolve_model_source  # noqa: E402
from restore.metrics import psnr  # noqa: E402
from restore.runtime.allocator import keep_freed_memory  # noqa: E402
from restore.models.build import build  # noqa: E402
from restore.models.genotype import HiNASGenotype, Node, load_genotype  # noqa: E402
from restore.runtime.backends import TorchBackend  # noqa: E402
from restore.runtime.profile import flops_per_megapixel, measure_latency  # noqa: E402
from restore.runtime.tiling import TileConfig, restore_tensor  # noqa: E402
from restore.zoo.registry import ModelEntry  # noqa: E402

SIGMA = 25.0
SMOKE_HINAS = HiNASGenotype(cell=(Node((0, 1), ("def_conv_3x3", "conv_3x3")),), widths=(0,), base_width=4,
                            stem_channels=8, aspp=False, name="hinas-dcn-smoke")


@dataclass
class Net:
    name: str
    module: torch.nn.Module
    entry: ModelEntry
    trained: bool


def shared_dir() -> Path | None:
    candidates = [Path(os.environ["RESTORE_SHARED"])] if os.environ.get("RESTORE_SHARED") else []
    candidates += [REPO.parent / "shared", REPO.parent.parent / "shared"]
    return next((c for c in candidates if c.is_dir()), None)


# ----------------------------------------------------------------------------- inputs


def _center_crop(img: np.ndarray, size: int) -> np.ndarray:
    ph, pw = max(0, size - img.shape[0]), max(0, size - img.shape[1])
    if ph or pw:
        img = np.pad(img, ((0, ph), (0, pw)), mode="reflect")
    y0, x0 = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
    return img[y0 : y0 + size, x0 : x0 + size]


def load_images(count: int, size: int, seed: int = 0) -> tuple[list[np.ndarray], str]:
    """(clean gray crops, where they came from); noise is added per net (σ map or not)."""
    from restore.io import read_image

    shared = shared_dir()
    folder = shared / "data" / "test" / "Set12" if shared else None
    if folder is None or not folder.is_dir():
        folder = REPO / "restore" / "examples"
    files = sorted(p for p in folder.glob("*.png") if "noisy" not in p.name)[:count]
    if not files:
        raise RestoreError(f"no test images in {folder}")
    crops = [_center_crop(read_image(f).pixels.mean(axis=2), size).astype(np.float32) for f in files]
    return crops, f"{len(crops)} × {folder.name} ({size}×{size} centre crops, AWGN σ={SIGMA:g}, seed {seed})"


def noisy_batch(clean: np.ndarray, noise_map: bool, rng: np.random.Generator) -> torch.Tensor:
    noisy = clean + rng.standard_normal(clean.shape, dtype=np.float32) * np.float32(SIGMA / 255)
    x = torch.from_numpy(noisy)[None, None]
    if noise_map:
        x = torch.cat([x, torch.full_like(x, SIGMA / 255)], dim=1)
    return x


# ----------------------------------------------------------------------------- networks


def dncnn_peer() -> Net | None:
    shared = shared_dir()
    weights = shared / "peers" / "dncnn_sigma25.safetensors" if shared else None
    if weights is None or not weights.is_file():
        return None
    from restore.models.dncnn import load_peer  # the peer layout of shared/peers/README.md

    module = load_peer(weights)
    return Net("DnCNN-S σ=25 (peer)", module, ModelEntry(name="dncnn-s25", task="denoise", channels=1), True)


def networks(smoke: bool) -> tuple[list[Net], list[str]]:
    nets, notes = [], []
    if not smoke:
        module, entry, note = resolve_model_source(None)
        nets.append(Net(f"{entry.name} (default)", module, entry, not note))
        if note:
            notes.append(note.removeprefix("note: "))
    genotype = SMOKE_HINAS if smoke else load_genotype(Path(__file__).with_name("hinas_dcn.json"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        hinas = build(genotype).eval()
    nets.append(Net(genotype.name, hinas, ModelEntry(name=genotype.name, task="denoise", channels=1, space="hinas"),
                    False))
    peer = dncnn_peer()
    if peer is None:
        notes.append("DnCNN peer skipped: shared/peers/dncnn_sigma25.safetensors not found")
    else:
        nets.append(peer)
    return nets, notes


# ----------------------------------------------------------------------------- backends


def backends(net: Net, args) -> tuple[list[tuple[str, object]], list[str]]:
    """[(label, backend)] for one network, and notes on the ones that were skipped."""
    from restore.export.ort_backend import OnnxRuntimeBackend, default_dcn_mode

    found: list[tuple[str, object]] = [("torch", TorchBackend(copy.deepcopy(net.module), device=args.device))]
    notes = []
    if args.smoke and net.trained:  # the peer's exports would dominate a smoke run
        return found, [f"{net.name}: torch only in --smoke runs"]
    modes = ["deformconv", "decomposed"] if has_dcn(net.module) else [default_dcn_mode()]
    for mode in modes:
        label = f"onnxruntime ({mode})" if has_dcn(net.module) else "onnxruntime"
        try:
            found.append((label, OnnxRuntimeBackend.for_model(net.module, entry=net.entry, device=args.device,
                                                              dcn=mode, threads=args.threads)))
        except RestoreError as exc:
            notes.append(f"{net.name}: {label} skipped: {exc}")
    try:
        from restore.export.tensorrt import TensorRTBackend

        trt = TensorRTBackend.for_model(net.module, entry=net.entry, device="cuda", tile=args.tile,
                                        max_side=max(args.size, args.tile))
        found.append(("tensorrt", trt))
    except RestoreError as exc:
        notes.append(f"TensorRT skipped: {exc}")
    return found, notes


# ----------------------------------------------------------------------------- measuring


def measure(net: Net, label: str, backend, images: list[torch.Tensor], clean: list[np.ndarray], reference, args):
    multiple = int(getattr(net.module, "size_multiple", 1))
    config = TileConfig(tile=args.tile, overlap=min(16, args.tile // 4))
    x = images[0]
    whole = measure_latency(backend, x.to(backend.device), warmup=args.warmup, repeats=args.repeats)
    tiled = measure_latency(lambda t: restore_tensor(backend, t, config=config, size_multiple=multiple), x,
                            warmup=args.warmup, repeats=args.repeats)
    with torch.inference_mode():
        outs = [restore_tensor(backend, im, config=TileConfig(tile=None), size_multiple=multiple) for im in images]
    diff = None if reference is None else max(float((o - r).abs().max()) for o, r in zip(outs, reference))
    scores = [psnr(o[0, 0].clamp(0, 1).numpy(), c, data_range=1.0) for o, c in zip(outs, clean)]
    row = dict(network=net.name, weights="trained" if net.trained else "random", backend=label,
               runs_on=backend.describe(), whole_ms=whole.median_ms, whole_mp_s=whole.megapixels_per_s,
               tiled_ms=tiled.median_ms, tiled_mp_s=tiled.megapixels_per_s, max_abs_diff_vs_torch=diff,
               psnr=float(np.mean(scores)), whole=asdict(whole), tiled=asdict(tiled))
    return row, outs


def bench_network(net: Net, clean: list[np.ndarray], args) -> tuple[dict, list[dict], list[str]]:
    in_channels = module_in_channels(net.module, net.entry.channels + int(net.entry.noise_map))
    info = dict(network=net.name, params=sum(p.numel() for p in net.module.parameters()),
                gflops_per_mp=flops_per_megapixel(net.module, in_channels, args.size) / 1e9,
                dcn=has_dcn(net.module), weights="trained" if net.trained else "random")
    rng = np.random.default_rng(0)  # the same noisy images for every backend
    images = [noisy_batch(c, net.entry.noise_map, rng) for c in clean]
    found, notes = backends(net, args)
    rows, reference = [], None
    for label, backend in found:
        row, outs = measure(net, label, backend, images, clean, reference, args)
        reference = outs if reference is None else reference  # torch comes first
        rows.append(row)
    return info, rows, notes


# ----------------------------------------------------------------------------- report


def _fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [
        "# Inference backends",
        "",
        f"Images: {result['images']}. Whole image {s['size']}×{s['size']}; tiled with {s['tile']}-pixel tiles. "
        f"Latency: median of {s['repeats']} runs after {s['warmup']} warm-up; {s['threads']} CPU thread(s); "
        f"malloc: {s.get('malloc', 'glibc default')}; {result['machine']}.",
        "",
        "| network | weights | params | GFLOPs/MP | DCN |",
        "|---|---|---:|---:|---|",
    ]
    lines += [f"| {n['network']} | {n['weights']} | {n['params'] / 1e6:.3f} M | {n['gflops_per_mp']:.1f} | "
              f"{'yes' if n['dcn'] else 'no'} |" for n in result["networks"]]
    lines += ["", "| network | backend | whole ms | whole MP/s | tiled ms | tiled MP/s | max \\|Δ\\| vs torch | PSNR dB |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        psnr_text = f"{r['psnr']:.2f}" + ("" if r["weights"] == "trained" else " (random weights)")
        lines.append(f"| {r['network']} | {r['backend']} | {r['whole_ms']:.1f} | {r['whole_mp_s']:.2f} | "
                     f"{r['tiled_ms']:.1f} | {r['tiled_mp_s']:.2f} | {_fmt(r['max_abs_diff_vs_torch'], '.1e')} | "
                     f"{psnr_text} |")
    lines += ["", "Backends as they ran:", ""]
    lines += sorted({f"- {r['backend']}: {r['runs_on']}" for r in result["rows"]})
    if result["notes"]:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="Write Markdown here and JSON beside it (same name, .json); default: print")
    p.add_argument("--size", type=int, default=256, help="image side (default 256)")
    p.add_argument("--tile", type=int, default=64, help="tile side of the tiled runs (default 64)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    p.add_argument("--images", type=int, default=3, help="test images (default 3)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch and ONNX Runtime")
    p.add_argument("--device", default="cpu", help="torch / ONNX Runtime device: cpu, cuda, auto (default cpu)")
    p.add_argument("--smoke", action="store_true", help="seconds, for CI: tiny nets and images, 1 repeat")
    args = p.parse_args(argv)
    if args.smoke:
        args.size, args.tile, args.repeats, args.warmup, args.images = 48, 32, 1, 0, 1
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    malloc = "kept freed memory" if keep_freed_memory() else "glibc default"  # as the CLI does
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    try:
        clean, where = load_images(args.images, args.size)
        nets, notes = networks(args.smoke)
        infos, rows = [], []
        for net in nets:
            info, net_rows, net_notes = bench_network(net, clean, args)
            infos.append(info)
            rows += net_rows
            notes += [n for n in net_notes if n not in notes]
    except RestoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = dict(settings=dict(size=args.size, tile=args.tile, repeats=args.repeats, warmup=args.warmup,
                                threads=args.threads, device=args.device, smoke=args.smoke, malloc=malloc),
                  machine=f"{platform.machine()} {platform.processor() or platform.system()}, torch {torch.__version__}",
                  images=where, networks=infos, rows=rows, notes=notes)
    text = markdown(result)
    if args.out is None:
        print(text, end="")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
