"""Nothing in the package unpickles, evals or execs."""

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "restore"
FORBIDDEN = re.compile(r"\bpickle\b|torch\.load\(|(?<![\w.])eval\(|(?<![\w.])exec\(")


def test_no_pickle_eval_or_exec_in_the_package():
    hits = []
    for path in PACKAGE.rglob("*.py"):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if FORBIDDEN.search(code) and "weights_only=True" not in code:
                hits.append(f"{path.relative_to(PACKAGE.parent)}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_scanner_catches_what_it_should():
    assert FORBIDDEN.search("x = pickle.loads(b)")
    assert FORBIDDEN.search("torch.load(path)")
    assert FORBIDDEN.search("eval('1+1')")
    assert not FORBIDDEN.search("model.eval()")
