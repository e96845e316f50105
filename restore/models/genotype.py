"""Genotypes: frozen dataclasses with a versioned JSON form.

A genotype is everything needed to build a derived network, and nothing else (no α/β/γ).
It is stored as JSON — never a code-executing format, never `eval`-ed — and validated on load: op names
against the registry, sizes against sane limits *before* any memory is allocated.

JSON form (both spaces)::

    {"format": "restore-genotype", "version": 1, "space": "modnas" | "hinas", ...fields}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Union

from restore.atomic import atomic_write
from restore.errors import RestoreError
from restore.models.ops import check_op

FORMAT = "restore-genotype"
VERSION = 1

# Limits that reject absurd (or hostile) genotypes before anything is allocated.
MAX_CHANNELS = 1024
MAX_LAYERS = 64
MAX_STAGES = 16
MAX_NODES = 16
MAX_IMAGE_CHANNELS = 4


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RestoreError(f"genotype field {name!r} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise RestoreError(f"genotype field {name!r} = {value} is outside [{low}, {high}]")
    return value


# --------------------------------------------------------------------------- MoD-NAS


@dataclass(frozen=True)
class Layer:
    """One derived MoD-NAS layer.

    ``op`` is a registry key of the layer's role, or ``"skip"`` for a layer that depth
    search removed: its output is then the output of layer ``source`` of the same block
    (0 = the block input), per Eq. 11 with the most probable path kept.
    """

    op: str
    channels: int
    source: int | None = None


@dataclass(frozen=True)
class Block:
    """Encoder block: normal layers then a down layer. Decoder block: an optional fusion
    conv (3×3, after concatenating the matching encoder level), normal layers, then an up
    layer (None for the last decoder block)."""

    layers: tuple[Layer, ...]
    sample: Layer | None = None
    fuse_channels: int | None = None


@dataclass(frozen=True)
class ModNASGenotype:
    encoder: tuple[Block, ...]
    decoder: tuple[Block, ...]
    head_channels: int = 48
    stages: int = 1
    in_channels: int = 1
    out_channels: int = 1
    noise_map: bool = False
    name: str = ""
    space: str = field(default="modnas", init=False)

    @property
    def levels(self) -> int:
        return len(self.encoder)


# --------------------------------------------------------------------------- HiNAS


@dataclass(frozen=True)
class Node:
    """A compact-cell node: two inputs (0 = h_{l-2}, 1 = h_{l-1}, 2+i = node i) and their ops."""

    inputs: tuple[int, int]
    ops: tuple[str, str]


@dataclass(frozen=True)
class HiNASGenotype:
    cell: tuple[Node, ...]
    widths: tuple[int, ...]  # per layer: 0, 1, 2 → W, 2W, 4W (Viterbi-decoded)
    base_width: int = 10
    stem_channels: int = 64
    aspp: bool = True
    in_channels: int = 1
    out_channels: int = 1
    noise_map: bool = False
    name: str = ""
    space: str = field(default="hinas", init=False)

    @property
    def nodes(self) -> int:
        return len(self.cell)


Genotype = Union[ModNASGenotype, HiNASGenotype]

# --------------------------------------------------------------------------- validation


def _validate_common(g: Genotype) -> None:
    _check_int("in_channels", g.in_channels, 1, MAX_IMAGE_CHANNELS)
    _check_int("out_channels", g.out_channels, 1, MAX_IMAGE_CHANNELS)
    if not isinstance(g.noise_map, bool):
        raise RestoreError("genotype field 'noise_map' must be true or false")


def _validate_layer(layer: Layer, role: str, index: int, where: str) -> None:
    _check_int(f"{where}.channels", layer.channels, 1, MAX_CHANNELS)
    if layer.op == "skip" and role == "normal":
        if layer.source is None:
            raise RestoreError(f"{where}: a skipped layer needs 'source'")
        _check_int(f"{where}.source", layer.source, 0, index)
        return
    check_op(role, layer.op)


def validate_modnas(g: ModNASGenotype) -> None:
    _validate_common(g)
    _check_int("head_channels", g.head_channels, 1, MAX_CHANNELS)
    _check_int("stages", g.stages, 1, MAX_STAGES)
    if not 1 <= len(g.encoder) <= 6 or len(g.decoder) != len(g.encoder) + 1:
        raise RestoreError(
            f"a MoD-NAS genotype needs 1–6 encoder blocks and one more decoder block "
            f"(got {len(g.encoder)} and {len(g.decoder)})"
        )
    n_layers = sum(len(b.layers) for b in g.encoder + g.decoder)
    _check_int("number of layers", n_layers, 1, MAX_LAYERS)
    for b, block in enumerate(g.encoder):
        if block.sample is None:
            raise RestoreError(f"encoder block {b} has no down-sampling layer")
        for i, layer in enumerate(block.layers):
            _validate_layer(layer, "normal", i, f"encoder[{b}].layers[{i}]")
        _validate_layer(block.sample, "down", 0, f"encoder[{b}].sample")
    for b, block in enumerate(g.decoder):
        last = b == len(g.decoder) - 1
        if (block.sample is None) != last:
            raise RestoreError("every decoder block but the last needs an up-sampling layer")
        if b > 0:
            if block.fuse_channels is None:
                raise RestoreError(f"decoder block {b} needs 'fuse_channels'")
            _check_int(f"decoder[{b}].fuse_channels", block.fuse_channels, 1, MAX_CHANNELS)
        for i, layer in enumerate(block.layers):
            _validate_layer(layer, "normal", i, f"decoder[{b}].layers[{i}]")
        if block.sample is not None:
            _validate_layer(block.sample, "up", 0, f"decoder[{b}].sample")


def validate_hinas(g: HiNASGenotype) -> None:
    _validate_common(g)
    _check_int("base_width", g.base_width, 1, MAX_CHANNELS // 4)
    _check_int("stem_channels", g.stem_channels, 1, MAX_CHANNELS)
    if not isinstance(g.aspp, bool):
        raise RestoreError("genotype field 'aspp' must be true or false")
    _check_int("number of nodes", len(g.cell), 1, MAX_NODES)
    _check_int("number of layers", len(g.widths), 1, MAX_LAYERS)
    if len(g.cell) * 4 * g.base_width > 4 * MAX_CHANNELS:
        raise RestoreError("genotype is too wide: nodes × 4 × base_width exceeds the limit")
    for level in g.widths:
        _check_int("width level", level, 0, 2)
    for a, b in zip(g.widths, g.widths[1:]):
        if abs(a - b) > 1:
            raise RestoreError(f"width levels may change by one step per layer, got {a} → {b}")
    for i, node in enumerate(g.cell):
        if len(node.inputs) != 2 or len(node.ops) != 2:
            raise RestoreError(f"cell node {i} needs exactly two inputs and two ops")
        for j, op in zip(node.inputs, node.ops):
            _check_int(f"cell[{i}].inputs", j, 0, i + 1)
            check_op("cell", op)
            if op == "none":
                raise RestoreError(f"cell node {i}: 'none' cannot be a kept input")


def validate(g: Genotype) -> Genotype:
    (validate_modnas if isinstance(g, ModNASGenotype) else validate_hinas)(g)
    return g


# --------------------------------------------------------------------------- JSON


def to_dict(g: Genotype) -> dict:
    body = asdict(g)
    body.pop("space")
    return {"format": FORMAT, "version": VERSION, "space": g.space, **body}


def to_json(g: Genotype) -> str:
    return json.dumps(to_dict(g), indent=2)


def _take(cls, data: dict, where: str) -> dict:
    if not isinstance(data, dict):
        raise RestoreError(f"{where} must be a JSON object")
    known = {f.name for f in fields(cls) if f.init}
    unknown = set(data) - known
    if unknown:
        raise RestoreError(f"unknown field(s) in {where}: {', '.join(sorted(unknown))}")
    return dict(data)


def _list(value: Any, where: str, limit: int) -> list:
    if not isinstance(value, (list, tuple)):
        raise RestoreError(f"{where} must be a list")
    if len(value) > limit:
        raise RestoreError(f"{where} has {len(value)} entries, more than the limit {limit}")
    return value


def _layer(d: Any, where: str) -> Layer:
    return Layer(**_take(Layer, d, where))


def _block(d: Any, where: str) -> Block:
    d = _take(Block, d, where)
    layers = tuple(_layer(x, f"{where}.layers[{i}]") for i, x in enumerate(_list(d.pop("layers", []), where, MAX_LAYERS)))
    sample = d.pop("sample", None)
    return Block(layers=layers, sample=None if sample is None else _layer(sample, f"{where}.sample"), **d)


def _modnas_from(d: dict) -> ModNASGenotype:
    d = _take(ModNASGenotype, d, "genotype")
    enc = tuple(_block(b, f"encoder[{i}]") for i, b in enumerate(_list(d.pop("encoder", []), "encoder", 8)))
    dec = tuple(_block(b, f"decoder[{i}]") for i, b in enumerate(_list(d.pop("decoder", []), "decoder", 9)))
    return ModNASGenotype(encoder=enc, decoder=dec, **d)


def _hinas_from(d: dict) -> HiNASGenotype:
    d = _take(HiNASGenotype, d, "genotype")
    cell = []
    for i, node in enumerate(_list(d.pop("cell", []), "cell", MAX_NODES)):
        node = _take(Node, node, f"cell[{i}]")
        cell.append(Node(inputs=tuple(node.get("inputs", ())), ops=tuple(node.get("ops", ()))))
    widths = tuple(_list(d.pop("widths", []), "widths", MAX_LAYERS))
    return HiNASGenotype(cell=tuple(cell), widths=widths, **d)


def from_dict(data: Any) -> Genotype:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise RestoreError("not a restore genotype (missing \"format\": \"restore-genotype\")")
    if data.get("version") != VERSION:
        raise RestoreError(f"unsupported genotype version {data.get('version')!r} (this build reads version {VERSION})")
    body = {k: v for k, v in data.items() if k not in ("format", "version", "space")}
    space = data.get("space")
    try:
        if space == "modnas":
            g: Genotype = _modnas_from(body)
        elif space == "hinas":
            g = _hinas_from(body)
        else:
            raise RestoreError(f"unknown search space {space!r} (known: modnas, hinas)")
    except TypeError as exc:  # wrong field types in nested constructors
        raise RestoreError(f"malformed genotype: {exc}") from None
    return validate(g)


def from_json(text: str) -> Genotype:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RestoreError(f"genotype is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    except RecursionError:  # "[[[[…" nested deeper than the parser's stack
        raise RestoreError("genotype JSON is nested too deeply") from None
    return from_dict(data)


def load_genotype(path: str | Path) -> Genotype:
    path = Path(path)
    if not path.is_file():
        raise RestoreError(f"genotype file not found: {path}")
    if path.stat().st_size > 1_000_000:
        raise RestoreError(f"genotype file {path} is larger than 1 MB; refusing to parse it")
    return from_json(path.read_text(encoding="utf-8"))


def _scaled(channels: int, factor: float) -> int:
    """Channels × factor, rounded to a multiple of 8 (MoD-NAS keeps widths in steps of 8), at least 8."""
    return max(8, int(round(channels * factor / 8)) * 8)


def scale_width(g: Genotype, factor: float) -> Genotype:
    """The same architecture with every width multiplied by `factor`.

    A search runs a narrow supernet to stay affordable; the derived network is then trained
    wider (DARTS searches at C=16 and evaluates at C=36). Topology, ops and skips are kept;
    MoD-NAS layer/fusion/head channels and HiNAS base width and stem scale together.
    """
    if not factor > 0:
        raise RestoreError(f"width factor must be positive, got {factor}")
    if factor == 1:
        return g
    if isinstance(g, HiNASGenotype):
        return validate(replace(g, base_width=max(1, round(g.base_width * factor)),
                                stem_channels=_scaled(g.stem_channels, factor)))

    def layer(x: Layer | None) -> Layer | None:
        return None if x is None else replace(x, channels=_scaled(x.channels, factor))

    def block(b: Block) -> Block:
        fuse = None if b.fuse_channels is None else _scaled(b.fuse_channels, factor)
        return Block(tuple(layer(x) for x in b.layers), layer(b.sample), fuse)

    return validate(replace(g, encoder=tuple(map(block, g.encoder)), decoder=tuple(map(block, g.decoder)),
                            head_channels=_scaled(g.head_channels, factor)))


def save_genotype(g: Genotype, path: str | Path) -> Path:
    """Write a genotype JSON atomically (temp + fsync + rename): a kill never leaves half a file."""
    return atomic_write(path, to_json(validate(g)) + "\n")
