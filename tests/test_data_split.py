from collections import Counter

from hdee.config import SplitConfig
from hdee.data.split import split_for_role, split_of


def test_adding_documents_never_moves_old_ones():
    cfg = SplitConfig()
    old = {f"doc-{i}": split_of(f"doc-{i}", cfg) for i in range(500)}
    for i in range(500, 2000):
        split_of(f"doc-{i}", cfg)
    assert {k: split_of(k, cfg) for k in old} == old


def test_fractions_are_roughly_respected():
    cfg = SplitConfig(train=0.5, val=0.25, test=0.25)
    counts = Counter(split_of(f"id{i}", cfg) for i in range(8000))
    assert abs(counts["train"] / 8000 - 0.5) < 0.03
    assert abs(counts["val"] / 8000 - 0.25) < 0.03


def test_heldout_train_share_goes_to_test():
    cfg = SplitConfig()
    ids = [f"x{i}" for i in range(300)]
    assert {split_for_role(i, cfg, "heldout") for i in ids} == {"val", "test"}
    for i in ids:
        if split_of(i, cfg) == "val":
            assert split_for_role(i, cfg, "heldout") == "val"
