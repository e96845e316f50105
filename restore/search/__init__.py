"""Architecture search: bilevel (first-order DARTS) search of MoD-NAS or HiNAS supernets.

    from restore.search import make_config, search
    cfg = make_config("cpu-modnas", train_dirs=["Train400"])
    summary = search(cfg, "runs/search")      # → runs/search/genotype.json
"""

from restore.search.config import SPACE_DEFAULTS, SearchConfig, list_presets, make_config, preset_dict
from restore.search.searcher import (
    Searcher,
    Splits,
    arch_snapshot,
    build_supernet,
    derive_genotype,
    describe,
    search,
    split_images,
)

__all__ = [
    "SPACE_DEFAULTS",
    "SearchConfig",
    "Searcher",
    "Splits",
    "arch_snapshot",
    "build_supernet",
    "derive_genotype",
    "describe",
    "list_presets",
    "make_config",
    "preset_dict",
    "search",
    "split_images",
]
