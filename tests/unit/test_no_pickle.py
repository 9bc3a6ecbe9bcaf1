"""Nothing in the package may unpickle data from disk."""

import re
from tests.helpers.paths import ROOT

SRC = ROOT / "src"
FORBIDDEN = [
    (re.compile(r"^\s*(import pickle|from pickle import|import cPickle|import dill)", re.M), "pickle import"),
    (re.compile(r"\bpickle\.loads?\("), "pickle.load"),
    (re.compile(r"weights_only\s*=\s*False"), "weights_only=False"),
]
TORCH_LOAD = re.compile(r"torch\.load\(")


def _calls(text: str, start: int) -> str:
    """The argument text of the call opening at `start` (balanced parentheses)."""
    depth, i = 0, start
    while i < len(text):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0 and text[i] == ")":
            return text[start : i + 1]
        i += 1
    return text[start:]


def offences(text: str) -> list[str]:
    found = [what for rx, what in FORBIDDEN if rx.search(text)]
    for m in TORCH_LOAD.finditer(text):
        if not re.search(r"weights_only\s*=\s*True", _calls(text, m.end() - 1)):
            found.append("torch.load without weights_only=True")
    return found


def test_checker_catches_each_pattern():
    assert offences("import pickle\n") == ["pickle import"]
    assert offences("x = pickle.load(f)") == ["pickle.load"]
    assert "torch.load without weights_only=True" in offences("torch.load(p, map_location='cpu')")
    assert "weights_only=False" in offences("torch.load(p, weights_only=False)")
    assert offences("torch.load(\n  p,\n  weights_only=True,\n)") == []


def test_source_tree_never_unpickles():
    files = sorted(SRC.rglob("*.py"))
    assert files
    bad = {str(p.relative_to(SRC)): offences(p.read_text(encoding="utf-8")) for p in files}
    assert {k: v for k, v in bad.items() if v} == {}
