import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hdee.config import DomainConfig
from hdee.data.sources import FilesSource, HubSource
from hdee.data.documents import decode_utf8
from hdee.data.sources import capped, open_source
from hdee.core.errors import DataError


def _domain(source):
    return DomainConfig(name="d", role="train", source=source)


def test_decode_counts_invalid_sequences():
    text, bad = decode_utf8(b"ok \xff\xfe end \xc3\xa9")
    assert bad == 2 and text.endswith("é") and text.count("\ufffd") == 2
    assert decode_utf8("fine ✓".encode()) == ("fine ✓", 0)


def test_files_txt_jsonl_parquet(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.txt").write_bytes(b"first \xff doc")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "row one", "id": "r1"}) + "\n\n" + json.dumps({"text": "row two"}) + "\n")
    pq.write_table(pa.table({"text": ["p0", "p1", "p2"]}), tmp_path / "c.parquet")
    src = open_source(_domain(FilesSource(paths=[str(tmp_path / "a" / "*.txt"), str(tmp_path / "b.jsonl"), str(tmp_path / "*.parquet")], id_field="id")))
    docs = list(src.documents())
    assert [d.id for d in docs] == ["one.txt", "r1", "b.jsonl:3", "c.parquet:0", "c.parquet:1", "c.parquet:2"]
    assert docs[0].invalid_utf8 == 1 and docs[4].text == "p1"
    assert len(src.fingerprint()["files"]) == 3


def test_missing_files_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="no file matches") as err:
        open_source(_domain(FilesSource(paths=[str(tmp_path / "nothing*.txt")])))
    assert "'d'" in str(err.value) and "\n" not in str(err.value)


def test_missing_text_field(tmp_path):
    (tmp_path / "x.jsonl").write_text(json.dumps({"body": "hi"}) + "\n")
    src = open_source(_domain(FilesSource(paths=[str(tmp_path / "x.jsonl")])))
    with pytest.raises(DataError, match="no field 'text'"):
        list(src.documents())


@pytest.mark.parametrize("fmt", ["json", "parquet"])
def test_hub_source_on_a_local_dataset(tmp_path, fmt):
    rows = [{"content": f"document number {i}", "key": f"k{i}"} for i in range(7)]
    if fmt == "json":
        path = tmp_path / "data.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path = tmp_path / "data.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
    spec = HubSource(path=fmt, data_files=[str(path)], text_field="content", id_field="key")
    docs = list(open_source(_domain(spec)).documents())
    assert [d.id for d in docs] == [r["key"] for r in rows]
    assert docs[3].text == "document number 3"


def test_capped_cuts_at_max_bytes():
    from hdee.data.documents import Document

    docs = [Document(str(i), "abcde") for i in range(5)] + [Document("blank", "   ")]
    out = list(capped(iter(docs), 12))
    assert [d.text for d in out] == ["abcde", "abcde", "ab"]
    assert len(list(capped(iter(docs), None))) == 5
