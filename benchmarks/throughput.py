#!/usr/bin/env python
"""CPU throughput of the shipped denoisers against the DnCNN peer, side by side in one run.

Issue 7 asks denoise-gray to run ≥ 3× (goal 5×) faster than the DnCNN peer with PyTorch on
2 CPU threads. Every network runs the same whole gray image through the same backend
(TorchBackend: inference mode, channels_last on CPU); the networks are timed in interleaved
rounds so that a slow moment of the machine hits all of them alike, and the median of the
rounds is reported. Ratios are only meaningful within one run. Like the `restore` CLI, the
benchmark keeps freed memory in the process (restore.runtime.allocator) for every network;
RESTORE_MALLOC=default measures glibc's default behaviour instead.

    python benchmarks/throughput.py                      # Markdown to stdout
    python benchmarks/throughput.py --out docs/results   # + throughput.md / .json there
    python benchmarks/throughput.py --rounds 3 --size 128 --models denoise-gray   # quick
    python benchmarks/throughput.py --models denoise-gray training/denoise-gray-deep   # a candidate
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


def candidates(names: list[str]) -> dict[str, tuple[TorchBackend, int, bool]]:
    """name → (backend, in_channels, noise map?); DnCNN first (the reference)."""
    nets: dict[str, tuple[TorchBackend, int, bool]] = {}
    dncnn = load_peer(PEER) if PEER.is_file() else DnCNN(channels=1)  # speed does not depend on the weights
    nets["DnCNN (peer)"] = (TorchBackend(dncnn, device="cpu"), 1, False)
    for name in names:  # zoo models, or training runs measured before they are shipped
        net, entry = network_for(name)
        nets[entry.name] = (TorchBackend(net, device="cpu"), entry.channels, entry.noise_map)
    return nets


def run(names: list[str], size: int, rounds: int, threads: int) -> dict:
    malloc = "kept freed memory (restore.runtime.allocator)" if keep_freed_memory() else "glibc default"
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    nets = candidates(names)
    image = torch.rand(1, 1, size, size)
    inputs = {n: append_noise_map(image, torch.tensor([25.0])) if noise_map else image
              for n, (_, _, noise_map) in nets.items()}
    times: dict[str, list[float]] = {n: [] for n in nets}
    with torch.inference_mode():
        for n, (backend, _, _) in nets.items():  # warm-up
            backend(inputs[n])
        for _ in range(rounds):
            for n, (backend, _, _) in nets.items():
                start = time.perf_counter()
                backend(inputs[n])
                times[n].append(time.perf_counter() - start)
    reference = statistics.median(times["DnCNN (peer)"])
    rows = []
    for n, (backend, channels, noise_map) in nets.items():
        median = statistics.median(times[n])
        module = backend.module
        rows.append({
            "model": n, "params": count_parameters(module),
            "gflops_per_mp": flops_per_megapixel(module, channels + int(noise_map)) / 1e9,
            "median_ms": median * 1e3, "mp_per_s": size * size / 1e6 / median, "speedup_vs_dncnn": reference / median,
        })
    return {"size": size, "rounds": rounds, "threads": threads, "torch": torch.__version__, "malloc": malloc,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "rows": rows,
            "command": " ".join(["python", "benchmarks/throughput.py", *sys.argv[1:]])}


def markdown(result: dict) -> str:
    lines = [f"Gray {result['size']}×{result['size']} whole image, PyTorch CPU, {result['threads']} threads, "
             f"median of {result['rounds']} interleaved rounds (torch {result['torch']}, {result['machine']}, "
             f"malloc: {result['malloc']})", "",
             "| model | params | GFLOPs/MP | median (ms) | MP/s | × DnCNN |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['params']:,} | {r['gflops_per_mp']:.0f} | {r['median_ms']:.1f} | "
                     f"{r['mp_per_s']:.2f} | {r['speedup_vs_dncnn']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=None, help="zoo models or training run folders (default: every gray denoiser)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="folder for throughput.md and throughput.json")
    args = parser.parse_args()
    result = run(args.models if args.models is not None else gray_denoisers(), args.size, args.rounds, args.threads)
    text = markdown(result)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "throughput.md").write_text(f"`{result['command']}`\n\n{text}\n", encoding="utf-8")
        (args.out / "throughput.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
