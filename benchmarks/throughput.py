#!/usr/bin/env python
"""CPU throughput of the shipped denoisers against the DnCNN peer, side by side in one run.

Issue 7 asks denoise-gray to run ≥ 3× (goal 5×) faster than the DnCNN peer with PyTorch on
2 CPU threads. Every network runs the same whole gray image through the same backend
(TorchBackend: inference mode, channels_last on CPU, float32 unless --precision asks for bf16 too); the networks are timed in interleaved
rounds so that a slow moment of the machine hits all of them alike, and the median of the
rounds is reported. Ratios are only meaningful within one run. Like the `restore` CLI, the
benchmark keeps freed memory in the process (restore.runtime.allocator) for every network;
RESTORE_MALLOC=default measures glibc's default behaviour instead.

    python benchmarks/throughput.py                      # Markdown to stdout
    python benchmarks/throughput.py --out docs/results   # + throughput.md / .json there
    python benchmarks/throughput.py --rounds 3 --size 128 --models denoise-gray   # quick
    python benchmarks/throughput.py --models denoise-gray training/denoise-gray-deep   # a candidate
    python benchmarks/throughput.py --models denoise-gray --precision fp32 bf16   # bf16 autocast too
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runs from a checkout without installing

from restore.models.dncnn import DnCNN, load_peer  # noqa: E402
from restore.runtime.allocator import keep_freed_memory  # noqa: E402
from restore.runtime.backends import TorchBackend  # noqa: E402
from restore.runtime.noise import append_noise_map  # noqa: E402
from restore.runtime.profile import count_parameters, flops_per_megapixel  # noqa: E402
from restore.restorer import network_for  # noqa: E402
from restore.zoo.registry import list_entries  # noqa: E402

PEER = Path(os.environ.get("RESTORE_SHARED") or REPO.parent / "shared") / "peers" / "dncnn_sigma25.safetensors"


def gray_denoisers() -> list[str]:
    return [e.name for e in list_entries() if e.task == "denoise" and e.channels == 1]


PEER_NAME = "DnCNN (peer)"


def candidates(names: list[str], precisions: list[str]) -> dict[str, tuple[TorchBackend, int, bool, str]]:
    """label → (backend, in_channels, noise map?, precision); DnCNN first at each precision."""
    nets: dict[str, tuple[TorchBackend, int, bool, str]] = {}
    for precision in precisions:
        suffix = f" [{precision}]" if len(precisions) > 1 else ""
        dncnn = load_peer(PEER) if PEER.is_file() else DnCNN(channels=1)  # speed does not depend on the weights
        nets[PEER_NAME + suffix] = (TorchBackend(dncnn, device="cpu", precision=precision), 1, False, precision)
        for name in names:  # zoo models, or training runs measured before they are shipped
            net, entry = network_for(name)
            backend = TorchBackend(net, device="cpu", precision=precision)
            nets[entry.name + suffix] = (backend, entry.channels, entry.noise_map, precision)
    return nets


def run(names: list[str], size: int, rounds: int, threads: int, precisions: list[str]) -> dict:
    malloc = "kept freed memory (restore.runtime.allocator)" if keep_freed_memory() else "glibc default"
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    nets = candidates(names, precisions)
    image = torch.rand(1, 1, size, size)
    inputs = {n: append_noise_map(image, torch.tensor([25.0])) if noise_map else image
              for n, (_, _, noise_map, _) in nets.items()}
    times: dict[str, list[float]] = {n: [] for n in nets}
    with torch.inference_mode():
        for n, (backend, *_) in nets.items():  # warm-up
            backend(inputs[n])
        for _ in range(rounds):
            for n, (backend, *_) in nets.items():
                start = time.perf_counter()
                backend(inputs[n])
                times[n].append(time.perf_counter() - start)
    median = {n: statistics.median(t) for n, t in times.items()}
    peer = {precision: median[n] for n, (*_, precision) in nets.items() if n.startswith(PEER_NAME)}
    reference = peer.get("fp32", next(iter(peer.values())))  # the peer as shipped: float32
    rows = []
    for n, (backend, channels, noise_map, precision) in nets.items():
        module = backend.module
        rows.append({
            "model": n, "precision": backend.precision, "params": count_parameters(module),
            "gflops_per_mp": flops_per_megapixel(module, channels + int(noise_map)) / 1e9,
            "median_ms": median[n] * 1e3, "mp_per_s": size * size / 1e6 / median[n],
            "speedup_vs_dncnn": reference / median[n], "speedup_vs_dncnn_same_precision": peer[precision] / median[n],
        })
    return {"size": size, "rounds": rounds, "threads": threads, "torch": torch.__version__, "malloc": malloc,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "rows": rows,
            "command": " ".join(["python", "benchmarks/throughput.py", *sys.argv[1:]])}


def markdown(result: dict) -> str:
    lines = [f"Gray {result['size']}×{result['size']} whole image, PyTorch CPU, {result['threads']} threads, "
             f"median of {result['rounds']} interleaved rounds (torch {result['torch']}, {result['machine']}, "
             f"malloc: {result['malloc']})", "",
             "| model | precision | params | GFLOPs/MP | median (ms) | MP/s | × DnCNN (fp32) | × DnCNN (same precision) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['precision']} | {r['params']:,} | {r['gflops_per_mp']:.0f} | {r['median_ms']:.1f} | "
                     f"{r['mp_per_s']:.2f} | {r['speedup_vs_dncnn']:.2f} | {r['speedup_vs_dncnn_same_precision']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=None, help="zoo models or training run folders (default: every gray denoiser)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16", "auto"],
                        help="torch numerics to time, each for every network, DnCNN included (default: fp32)")
    parser.add_argument("--out", type=Path, default=None, help="folder for throughput.md and throughput.json")
    args = parser.parse_args()
    result = run(args.models if args.models is not None else gray_denoisers(), args.size, args.rounds, args.threads,
                 args.precision)
    text = markdown(result)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "throughput.md").write_text(f"`{result['command']}`\n\n{text}\n", encoding="utf-8")
        (args.out / "throughput.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
