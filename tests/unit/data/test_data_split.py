from collections import Counter

from hdee.config import SplitConfig
from hdee.data.documents import Document
from hdee.data.embedded.domain import chunks
from hdee.data.split import split_for_role, split_of


def test_adding_documents_never_moves_old_ones():
    cfg = SplitConfig()
    old = {f"doc-{i}": split_of(f"doc-{i}", "d", cfg) for i in range(500)}
    for i in range(500, 2000):
        split_of(f"doc-{i}", "d", cfg)
    assert {k: split_of(k, "d", cfg) for k in old} == old


def test_fractions_are_roughly_respected():
    cfg = SplitConfig(train=0.5, val=0.25, test=0.25)
    counts = Counter(split_of(f"id{i}", "d", cfg) for i in range(8000))
    assert abs(counts["train"] / 8000 - 0.5) < 0.03
    assert abs(counts["val"] / 8000 - 0.25) < 0.03


def test_heldout_train_share_goes_to_test():
    cfg = SplitConfig()
    ids = [f"x{i}" for i in range(300)]
    assert {split_for_role(i, "d", cfg, "heldout") for i in ids} == {"val", "test"}
    for i in ids:
        if split_of(i, "d", cfg) == "val":
            assert split_for_role(i, "d", cfg, "heldout") == "val"


def test_the_split_is_salted_by_domain():
    # the same file read by two domains (code, and its docstrings) must not get the same split by construction
    cfg = SplitConfig()
    keys = [f"pkg/module_{i}.py" for i in range(4000)]
    same = sum(split_of(k, "code", cfg) == split_of(k, "docstrings", cfg) for k in keys) / len(keys)
    chance = cfg.train**2 + cfg.val**2 + cfg.test**2  # 0.66 for independent splits
    assert abs(same - chance) < 0.03


def test_pieces_of_a_long_document_share_its_split():
    text = "\n\n".join(f"paragraph {j} " + "word " * 150 for j in range(60))
    pieces = chunks("long.py", text)
    assert len(pieces) > 5
    docs = [Document(i, t, parent="long.py") for i, t in pieces]
    assert {d.split_key for d in docs} == {"long.py"}
    cfg = SplitConfig()
    for n in range(40):  # in every domain, all pieces of a document land where the document does
        assert {split_of(d.split_key, f"dom{n}", cfg) for d in docs} == {split_of("long.py", f"dom{n}", cfg)}
