"""Nothing in the package unpickles, evals or execs (issue 8, untrusted files).

The scan parses every module (`ast`), so comments and strings neither hide nor fake a hit,
and calls spread over several lines are seen whole. Forbidden:

- importing `pickle`, `cPickle`, `dill`, `marshal`, `shelve` or `joblib` (any form);
- calling `eval`, `exec`, `compile` or `__import__` as builtins;
- `torch.load(...)` / `load(...)` imported from torch, unless `weights_only=True` is passed;
- `numpy.load(..., allow_pickle=True)` or any call with `allow_pickle=True`.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "restore"
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "marshal", "shelve", "joblib"}
UNSAFE_BUILTINS = {"eval", "exec", "compile", "__import__"}


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def unsafe_uses(source: str) -> list[tuple[int, str]]:
    """(line, reason) for every forbidden construct in `source`."""
    tree = ast.parse(source)
    torch_load_names = set()  # local names bound to torch.load by `from torch import load [as x]`
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            hits += [(node.lineno, f"import {a.name}") for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in UNSAFE_MODULES:
                hits.append((node.lineno, f"from {node.module} import …"))
            if node.module == "torch":
                torch_load_names |= {a.asname or a.name for a in node.names if a.name == "load"}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in UNSAFE_BUILTINS:
            hits.append((node.lineno, f"{func.id}(…)"))
        is_torch_load = (isinstance(func, ast.Attribute) and func.attr == "load"
                         and isinstance(func.value, ast.Name) and func.value.id == "torch") or (
            isinstance(func, ast.Name) and func.id in torch_load_names)
        if is_torch_load and not _is_true(_keyword(node, "weights_only")):
            hits.append((node.lineno, "torch.load without weights_only=True"))
        if _is_true(_keyword(node, "allow_pickle")):
            hits.append((node.lineno, "allow_pickle=True"))
    return sorted(hits)


def test_no_pickle_eval_or_exec_in_the_package():
    hits = [f"{path.relative_to(PACKAGE.parent)}:{line}: {why}"
            for path in sorted(PACKAGE.rglob("*.py"))
            for line, why in unsafe_uses(path.read_text(encoding="utf-8"))]
    assert not hits, "\n".join(hits)


def test_scanner_catches_what_it_should():
    bad = {
        "import pickle": 1,
        "import numpy as np, pickle as p": 1,
        "from pickle import loads": 1,
        "import dill": 1,
        "x = eval('1+1')": 1,
        "exec(code)": 1,
        "torch.load(path)": 1,
        "torch.load(\n    path,\n    map_location='cpu',\n)": 1,  # a call over several lines
        "torch.load(path, weights_only=False)": 1,
        "from torch import load\nload(path)": 1,
        "from torch import load as tl\ntl(path)": 1,
        "np.load(path, allow_pickle=True)": 1,
    }
    for source, count in bad.items():
        assert len(unsafe_uses(source)) == count, source


def test_scanner_ignores_what_is_safe():
    safe = [
        "model.eval()",
        "torch.load(path, weights_only=True)",
        "np.load(path)",
        "s = 'import pickle; eval(x)'  # pickle, eval( and exec( in a string or comment",
        "json.load(fh)",
        "from safetensors.torch import load_file\nload_file(path)",
    ]
    for source in safe:
        assert unsafe_uses(source) == [], source
