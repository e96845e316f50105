"""Regenerate the zoo quality tables of docs/RESULTS.md (one `restore eval` run per table).

Every system in a table sees the same inputs (AWGN: numpy seed 0 per image, noisy input
not clipped; outputs clipped to [0, 1]). Writes docs/results/<table>.md and .json and
prints the equivalent `restore eval` command for each table.

    python benchmarks/zoo_eval.py                 # all tables whose models are shipped
    python benchmarks/zoo_eval.py --only bsd68-s25 --limit 4
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path

from restore.errors import RestoreError
from restore.evaluate import EvalOptions, evaluate_models, render_markdown
from restore.runtime.tiling import TileConfig
from restore.zoo.registry import list_models

SHARED = Path(os.environ.get("RESTORE_SHARED") or Path(__file__).resolve().parents[2] / "shared")
REPO = Path(__file__).resolve().parents[1]
PEER = f"dncnn:{SHARED / 'peers/dncnn_sigma25.safetensors'}"

GRAY_DENOISERS = ["denoise-gray", "denoise-gray-t2", "denoise-gray-modnas-b"]

# name: (folder, degradation, channels, systems, extra options)
TABLES = {
    "set12-s25": ("data/test/Set12", "awgn:25", 1, [*GRAY_DENOISERS, PEER, "bm3d"], {}),
    "bsd68-s25": ("data/test/BSD68", "awgn:25", 1, [*GRAY_DENOISERS, PEER, "bm3d"], {}),
    "bsd68-s25-blind": ("data/test/BSD68", "awgn:25", 1, GRAY_DENOISERS, {"sigma_mode": "estimate"}),
    "bsd68-s15": ("data/test/BSD68", "awgn:15", 1, GRAY_DENOISERS, {}),
    "bsd68-s50": ("data/test/BSD68", "awgn:50", 1, GRAY_DENOISERS, {}),
    "cbsd68-s25": ("data/test/CBSD68", "awgn:25", 3, ["denoise-color", "denoise-gray", PEER, "cbm3d"], {}),
    "cbsd68-camera": ("data/test/CBSD68", "camera", 3, ["denoise-real", "denoise-color"], {"sigma_mode": "estimate"}),
    **{f"live1-q{q}": ("data/test/LIVE1", f"jpeg:{q}", 1, ["deblock-gray"], {}) for q in (10, 20, 30, 40)},
    **{f"classic5-q{q}": ("data/test/classic5", f"jpeg:{q}", 1, ["deblock-gray"], {}) for q in (10, 20, 30, 40)},
    **{f"live1-color-q{q}": ("data/test/LIVE1", f"jpeg:{q}", 3, ["deblock-color", "deblock-gray"], {}) for q in (10, 20)},
    "rain100h": ("data/rain/Rain100H/rain", None, 3, ["derain", "derain-hinas"], {"clean_dir": "data/rain/Rain100H/norain"}),
    # the product's default path: `restore derain` runs each model's tiles (ModelEntry.tile: 128² for derain, else 64²; overlap 16)
    "rain100h-tiled": ("data/rain/Rain100H/rain", None, 3, ["derain", "derain-hinas"],
                       {"clean_dir": "data/rain/Rain100H/norain", "tiled": True}),
    "rain100l": ("data/rain/Rain100L_subset10/rain", None, 3, ["derain", "derain-hinas"],
                 {"clean_dir": "data/rain/Rain100L_subset10/norain"}),
}


def _shown(path: Path) -> str:
    """A data path as a user in the repository root would type it (../shared/...)."""
    return os.path.relpath(path, REPO)


def command_line(name: str, limit: int | None) -> str:
    folder, deg, ch, systems, extra = TABLES[name]
    parts = ["restore", "eval", _shown(SHARED / folder), "--channels", str(ch)]
    if deg:
        parts += ["-d", deg]
    if "clean_dir" in extra:
        parts += ["--clean-dir", _shown(SHARED / extra["clean_dir"])]
    if "sigma_mode" in extra:
        parts += ["--sigma", extra["sigma_mode"]]
    if extra.get("tiled"):
        parts += ["--tiled"]
    for s in systems:
        parts += ["-m", f"dncnn:{_shown(Path(s[6:]))}" if s.startswith("dncnn:") else s]
    if limit:
        parts += ["--limit", str(limit)]
    return shlex.join(parts)


def run_table(name: str, limit: int | None, out_dir: Path) -> None:
    folder, deg, ch, systems, extra = TABLES[name]
    shipped = set(list_models())
    available = [s for s in systems if s not in TABLES and (s.startswith("dncnn:") or s in ("bm3d", "cbm3d") or s in shipped)]
    if not any(s in shipped for s in available):
        print(f"skip {name}: its model is not shipped yet")
        return
    options = EvalOptions(degradation=deg or "awgn:0", channels=ch, limit=limit,
                          sigma_mode=extra.get("sigma_mode", "known"),
                          clean_dir=SHARED / extra["clean_dir"] if "clean_dir" in extra else None,
                          tile=TileConfig(model_default=True) if extra.get("tiled") else None)
    specs = []
    for s in available:
        try:
            if s in ("bm3d", "cbm3d"):
                import bm3d  # noqa: F401
            specs.append(s)
        except ImportError:
            print(f"  ({s} left out: pip install bm3d)")
    result = evaluate_models(SHARED / folder, specs, options, progress=True)
    md = render_markdown(result)
    cmd = command_line(name, limit)
    (out_dir / f"{name}.md").write_text(f"`{cmd}`\n\n{md}\n", encoding="utf-8")
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"$ {cmd}\n{md}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=sorted(TABLES), help="tables to run")
    parser.add_argument("--limit", type=int, default=None, help="first N images only (smoke runs)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only or TABLES:
        try:
            run_table(name, args.limit, args.out)
        except RestoreError as exc:
            print(f"skip {name}: {exc}")


if __name__ == "__main__":
    main()
