"""Problem records: the schema is enforced on write and on read, bad rows are named or quarantined."""
import base64
import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from openvlt.records import RecordError, image_files, load_image, read_records, reward_plugin_files, write_records


def png(colour=(255, 0, 0), size=(8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def record(i: int, **changes):
    row = {
        "id": f"p{i}", "images": [png()], "question": "How many? <image>", "answer": str(i),
        "data_source": "unit", "reward": "math", "extra_info": {"choices": ["1", "2"], "precision": 2},
    }
    row.update(changes)
    return row


def test_round_trip_keeps_fields_extra_columns_and_image_bytes(tmp_path):
    rows = [record(1, caption="a red square"), record(2, caption="two", images=[png((0, 0, 255))])]
    assert write_records(rows, tmp_path / "r.parquet") == 2
    back = read_records(tmp_path / "r.parquet")
    assert len(back) == 2 and back.columns[:7] == ["id", "images", "question", "answer", "data_source", "reward", "extra_info"]
    assert back[0]["extra_info"] == {"choices": ["1", "2"], "precision": 2}
    assert back[1]["caption"] == "two"
    assert back[1]["images"][0] == rows[1]["images"][0]  # stored encoded, byte for byte
    assert load_image(back[1]["images"][0]).getpixel((0, 0)) == (0, 0, 255)


def test_a_written_file_is_a_hugging_face_data_set_in_row_groups_a_slice_can_read_alone(tmp_path):
    """Written a row group at a time (the rows' images are not copied into one whole table first): the file
    carries `datasets`' features, so `datasets` reads its images as images, and holds groups of 100 rows."""
    import datasets

    rows = [record(i, images=[png((i, 0, 0))]) for i in range(250)]
    assert write_records(rows, tmp_path / "r.parquet") == 250
    file = pq.ParquetFile(tmp_path / "r.parquet")
    assert [file.metadata.row_group(g).num_rows for g in range(file.num_row_groups)] == [100, 100, 50]
    loaded = datasets.Dataset.from_parquet(str(tmp_path / "r.parquet"))
    assert isinstance(loaded.features["images"].feature, datasets.Image) and loaded[249]["images"][0].getpixel((0, 0)) == (249, 0, 0)
    assert [r["id"] for r in read_records(tmp_path / "r.parquet", start=195, stop=205)] == [f"p{i}" for i in range(195, 205)]
    assert write_records([], tmp_path / "none.parquet") == 0 and len(read_records(tmp_path / "none.parquet")) == 0


def test_images_in_a_large_list_as_datasets_writes_large_list_image_are_read(tmp_path):
    """`datasets.LargeList(Image())` stores images as a large list; a set mixing it with list shards is promoted
    to one too. Both read as any record file."""
    import datasets

    features = datasets.Features({"id": datasets.Value("string"), "images": datasets.LargeList(datasets.Image()),
                                  **{k: datasets.Value("string") for k in ("question", "answer", "data_source", "reward", "extra_info")}})
    rows = {"id": ["z1", "z2"], "images": [[{"bytes": png((0, 9, 0)), "path": None}]] * 2, "question": ["<image> ?"] * 2,
            "answer": ["1"] * 2, "data_source": ["u"] * 2, "reward": ["math"] * 2, "extra_info": ["{}"] * 2}
    (tmp_path / "set").mkdir()
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "set" / "train-00001-of-00002.parquet"))
    assert pa.types.is_large_list(pq.read_schema(tmp_path / "set" / "train-00001-of-00002.parquet").field("images").type)
    assert load_image(read_records(tmp_path / "set" / "train-00001-of-00002.parquet")[1]["images"][0]).getpixel((0, 0)) == (0, 9, 0)
    write_records([record(i) for i in range(3)], tmp_path / "set" / "train-00000-of-00002.parquet")
    assert [r["id"] for r in read_records(tmp_path / "set", start=2, stop=4)] == ["p2", "z1"]


def test_an_extra_column_only_some_rows_have_is_kept_with_none_elsewhere(tmp_path):
    rows = [record(1), record(2, caption="two", n_correct=3), record(3, n_correct=1)]
    write_records(rows, tmp_path / "r.parquet")
    back = read_records(tmp_path / "r.parquet")
    assert [(r["caption"], r["n_correct"]) for r in back] == [(None, None), ("two", 3), (None, 1)]


@pytest.mark.parametrize("values, others, row, shown", [
    ({150: "hard"}, 1, 150, r"holds str 'hard' here but int 1 in row 0 \(id 'p0'\)"),
    ({1: {"a": "x"}, 7: {"a": 2}}, None, 7, r"holds dict \{'a': 2\} here but dict \{'a': 'x'\} in row 1 \(id 'p1'\)"),
    ({4: [1, 2]}, 1, 4, r"holds list \[1, 2\] here but int 1 in row 0"),
    ({3: object()}, None, 3, r"holds object <object .*>, a value a parquet column cannot hold"),
])
def test_an_extra_column_holding_two_types_names_the_column_and_both_rows(tmp_path, values, others, row, shown):
    """Rows a user builds by hand (or a plugin's extra columns) may hold 1 in one row and "hard" in another;
    the error names the file, the row, the column and the earlier row it clashes with, and writes nothing."""
    rows = [record(i, images=[], question="How many?", level=values.get(i, others)) for i in range(200)]
    with pytest.raises(RecordError, match=rf"r\.parquet, row {row} \(id 'p{row}'\): extra column 'level' {shown}") as err:
        write_records(rows, tmp_path / "r.parquet", skip_bad_rows=True)
    assert not list(tmp_path.iterdir())
    assert err.value.row == row


def test_images_given_as_paths_are_read_in(tmp_path):
    path = tmp_path / "img.png"
    path.write_bytes(png((0, 255, 0)))
    write_records([record(1, images=[str(path)])], tmp_path / "r.parquet")
    path.unlink()  # the record file is self-contained
    assert load_image(read_records(tmp_path / "r.parquet")[0]["images"][0]).getpixel((1, 1)) == (0, 255, 0)


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"images": [b"this is not an image"]}, "image 1 of 1 cannot be decoded"),
        ({"question": "no placeholder here"}, "0 <image> placeholder(s) but the row has 1 image(s)"),
        ({"question": "<image> and <image>"}, "2 <image> placeholder(s) but the row has 1 image(s)"),
        ({"answer": "   "}, "empty 'answer'"),
        ({"answer": None}, "missing field 'answer'"),
        ({"reward": ""}, "empty 'reward'"),
        ({"images": [], "question": " "}, "empty 'question'"),
        ({"extra_info": [1, 2]}, "extra_info must be a dict"),
        ({"id": 7}, "field 'id' must be a string"),
    ],
)
def test_bad_row_on_write_names_file_row_and_reason(tmp_path, changes, reason):
    rows = [record(0), record(1), record(2, **changes)]
    with pytest.raises(RecordError) as err:
        write_records(rows, tmp_path / "r.parquet")
    assert err.value.row == 2
    assert str(tmp_path / "r.parquet") in str(err.value) and "row 2" in str(err.value) and reason in str(err.value)
    assert not (tmp_path / "r.parquet").exists()  # nothing half-written


def test_many_bad_rows_are_counted_and_the_first_ones_named(tmp_path):
    rows = [record(0)] + [record(k, answer="") for k in range(1, 14)]
    with pytest.raises(RecordError) as err:
        write_records(rows, tmp_path / "r.parquet")
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'r.parquet'}: 13 bad rows: row 1 (id 'p1'): empty 'answer'; row 2 ")
    assert "row 10 (id 'p10')" in message and "row 11 " not in message and message.endswith("; and 3 more")
    assert not (tmp_path / "r.parquet").exists()


def test_a_question_that_is_its_image_alone_is_a_problem(tmp_path):
    write_records([record(0, question="<image>")], tmp_path / "r.parquet")
    assert read_records(tmp_path / "r.parquet")[0]["question"] == "<image>"


def test_duplicate_id_is_a_bad_row(tmp_path):
    with pytest.raises(RecordError, match=r"row 1 \(id 'p0'\): duplicate id 'p0'"):
        write_records([record(0), record(0)], tmp_path / "r.parquet")


def test_skip_bad_rows_quarantines_losslessly_with_reason(tmp_path):
    rows = [record(0), record(1, images=[b"garbage"]), record(2, answer=""), record(3)]
    assert write_records(rows, tmp_path / "r.parquet", skip_bad_rows=True) == 2
    assert [r["id"] for r in read_records(tmp_path / "r.parquet")] == ["p0", "p3"]
    entries = [json.loads(line) for line in (tmp_path / "r.quarantine.jsonl").read_text().splitlines()]
    assert [(e["row"], e["id"]) for e in entries] == [(1, "p1"), (2, "p2")]
    assert "cannot be decoded" in entries[0]["reason"] and "empty 'answer'" in entries[1]["reason"]
    assert entries[0]["record"]["images"][0] == {"base64": "Z2FyYmFnZQ=="}  # b"garbage", nothing lost


def _write_raw(path, rows, **options):
    """A parquet file written by someone else's tool: plain pyarrow, images as a list of raw bytes."""
    pq.write_table(pa.table({
        "id": [r["id"] for r in rows],
        "images": [r["images"] for r in rows],
        "question": [r["question"] for r in rows],
        "answer": [r["answer"] for r in rows],
        "data_source": [r["data_source"] for r in rows],
        "reward": [r["reward"] for r in rows],
        "extra_info": [json.dumps(r["extra_info"]) for r in rows],
    }), path, **options)


def test_bad_rows_on_read_are_named_or_quarantined(tmp_path):
    path = tmp_path / "theirs.parquet"
    _write_raw(path, [record(0), record(1, images=[b"\x89PNG broken"]), record(2, question="no image"), record(0)])
    with pytest.raises(RecordError, match=r"theirs.parquet: 3 bad rows: row 1 \(id 'p1'\): image 1 of 1 cannot be decoded "
                                          r".*; row 2 \(id 'p2'\): question has 0 <image>.*; row 3 \(id 'p0'\): duplicate id") as err:
        read_records(path)  # every bad row at once: one fix, one rerun
    assert (err.value.row, err.value.record_id) == (1, "p1") and [r for r, _, _ in err.value.others] == [2, 3]
    kept = read_records(path, skip_bad_rows=True, quarantine_path=tmp_path / "q.jsonl")
    assert [r["id"] for r in kept] == ["p0"]
    reasons = [json.loads(line)["reason"] for line in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert len(reasons) == 3 and "duplicate id 'p0'" in reasons[2]


def test_text_that_is_not_utf8_is_a_bad_row_not_a_bare_decode_error(tmp_path):
    """A writer that does not check its strings (C++, another language's Arrow) can store bytes Python
    cannot decode; the row is named, or quarantined with its bytes as they were."""
    path = tmp_path / "latin1.parquet"
    _write_raw(path, [record(0), record(1), record(2)])
    table = pq.read_table(path)
    questions = pa.array([q.encode() for q in table.column("question").to_pylist()], pa.binary())
    questions = pa.array([questions[0].as_py(), b"caf\xe9? <image>", questions[2].as_py()], pa.binary()).view(pa.string())
    pq.write_table(table.set_column(table.schema.get_field_index("question"), "question", questions), path)
    with pytest.raises(RecordError, match=r"latin1.parquet, row 1 \(id 'p1'\): field 'question' is not UTF-8 text "
                                          r"\(byte 0xe9 at position 3\)"):
        read_records(path)
    kept = read_records(path, skip_bad_rows=True, quarantine_path=tmp_path / "q.jsonl")
    assert [r["id"] for r in kept] == ["p0", "p2"] and kept.source_rows == [0, 2]
    (entry,) = [json.loads(line) for line in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert (entry["row"], entry["id"]) == (1, "p1")
    assert base64.b64decode(entry["record"]["question"]["base64"]) == b"caf\xe9? <image>"

    # an undecodable id, after a row that is bad for another reason: named and quarantined in file order
    ids = pa.array([b"p0", b"p\xff1", b"p2"], pa.binary()).view(pa.string())
    table = table.set_column(table.schema.get_field_index("id"), "id", ids)
    pq.write_table(table.set_column(table.schema.get_field_index("answer"), "answer", pa.array(["", "1", "2"])), path)
    with pytest.raises(RecordError, match=r"row 0 \(id 'p0'\): empty 'answer'"):
        read_records(path)
    assert [r["id"] for r in read_records(path, skip_bad_rows=True, quarantine_path=tmp_path / "q.jsonl")] == ["p2"]
    entries = [json.loads(line) for line in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert [e["row"] for e in entries] == [0, 1] and base64.b64decode(entries[1]["id"]["base64"]) == b"p\xff1"

    # inside a struct extra_info (verl's layout): the file and the reason, not a bare UnicodeDecodeError
    notes = pa.array([b"ok", b"caf\xe9", b"ok"], pa.binary()).view(pa.string())
    table = table.set_column(table.schema.get_field_index("extra_info"), "extra_info",
                             pa.StructArray.from_arrays([notes], ["note"]))
    pq.write_table(table, path)
    with pytest.raises(RecordError, match=r"latin1.parquet: a column holds text that is not UTF-8"):
        read_records(path, skip_bad_rows=True, quarantine_path=tmp_path / "q.jsonl")


def test_a_row_range_reads_and_checks_only_its_rows_and_names_file_rows(tmp_path, caplog):
    from openvlt.stages.common import NoProblems, load_problems

    path = tmp_path / "theirs.parquet"
    _write_raw(path, [record(0), record(1, images=[b"\x89PNG broken"]), record(2), record(3, answer=" "), record(4)])
    chosen = read_records(path, start=2, stop=3)
    assert [r["id"] for r in chosen] == ["p2"] and chosen.source_rows == [2] and chosen.file_rows == 5
    with pytest.raises(RecordError, match=r"theirs.parquet, row 3 \(id 'p3'\): empty 'answer'"):
        read_records(path, start=2)
    kept = read_records(path, start=2, skip_bad_rows=True, quarantine_path=tmp_path / "q.jsonl")
    assert kept.source_rows == [2, 4] and [json.loads(line)["row"] for line in (tmp_path / "q.jsonl").open()] == [3]
    assert [p["id"] for p in load_problems(path, 4, 9)] == ["p4"]
    assert "rows [4, 9) asked for, but the file has 5 rows: using [4, 5)" in caplog.text
    with pytest.raises(NoProblems, match=r"rows \[5, 9\) select no problems \(the file has 5 rows\)"):
        load_problems(path, 5, 9)


def test_integer_ids_and_answers_and_null_extra_info_are_read_and_urls_and_bad_images_are_named(tmp_path):
    columns = {"id": [1, 2], "images": [None, None], "question": ["1 + 2?", "2 + 2?"], "answer": [3, 4],
               "data_source": ["unit"] * 2, "reward": ["math"] * 2, "extra_info": [None, '{"precision": 2}']}
    pq.write_table(pa.table(columns), tmp_path / "ints.parquet")
    assert [(r["id"], r["answer"], r["extra_info"]) for r in read_records(tmp_path / "ints.parquet")] == [
        ("1", "3", {}), ("2", "4", {"precision": 2})]
    import pandas as pd  # pandas' integers with a missing value are floats: read as integers, the missing one named

    pd.DataFrame({**columns, "answer": [3, None]}).to_parquet(tmp_path / "floats.parquet")
    with pytest.raises(RecordError, match=r"row 1 \(id '2'\): .*answer"):
        read_records(tmp_path / "floats.parquet")
    pd.DataFrame({**columns, "id": [1.0, 2.0]}).to_parquet(tmp_path / "floats.parquet")
    assert [(r["id"], r["answer"]) for r in read_records(tmp_path / "floats.parquet")] == [("1", "3"), ("2", "4")]
    for odd in (3.5, float("inf"), 1e20):  # a real float, or one no integer holds: the row is named
        pd.DataFrame({**columns, "answer": [odd, 4.0]}).to_parquet(tmp_path / "floats.parquet")
        with pytest.raises(RecordError, match=r"row 0 \(id '1'\): field 'answer' must be a string, got float"):
            read_records(tmp_path / "floats.parquet")
    pq.write_table(pa.table({**columns, "images": [["https://example.com/a.png"], ["b.png"]],
                             "question": ["<image>", "<image>"]}), tmp_path / "urls.parquet")
    with pytest.raises(RecordError, match=r"row 0 \(id '1'\): image 1 of 1 cannot be read from https://example.com/a.png "
                                          r"\(a URL: openvlt reads local files only; download the images first\)"):
        read_records(tmp_path / "urls.parquet")
    pq.write_table(pa.table({**columns, "images": [[png()], [b"not an image"]], "question": ["<image>", "<image>"]}),
                   tmp_path / "bad.parquet")
    with pytest.raises(RecordError) as err:
        read_records(tmp_path / "bad.parquet")
    assert str(err.value).endswith("row 1 (id '2'): image 1 of 1 cannot be decoded (UnidentifiedImageError: "
                                   "cannot identify image file)")


def truncated_jpeg() -> bytes:
    """A JPEG cut short: its header is fine, its pixels are not all there."""
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noise.save(buf, "JPEG")
    return buf.getvalue()[:1500]


def test_a_truncated_jpeg_is_caught_when_images_are_decoded(tmp_path):
    path = tmp_path / "theirs.parquet"
    _write_raw(path, [record(0), record(1, images=[truncated_jpeg()])])
    assert len(read_records(path)) == 2  # the header check alone passes it (the run's own files need no more)
    with pytest.raises(RecordError, match=r"theirs.parquet, row 1 \(id 'p1'\): image 1 of 1 cannot be decoded "
                                          r"\(OSError: image file is truncated"):
        read_records(path, decode_images=True)


def test_plain_pyarrow_files_with_image_structs_are_accepted(tmp_path):
    path = tmp_path / "structs.parquet"
    pq.write_table(pa.table({
        "id": ["a"], "images": [[{"bytes": png((9, 9, 9)), "path": None}]], "question": ["<image> how many?"],
        "answer": ["1"], "data_source": ["x"], "reward": ["math"], "extra_info": ["{}"],
    }), path)
    assert load_image(read_records(path)[0]["images"][0]).getpixel((0, 0)) == (9, 9, 9)


def test_files_other_tools_write_are_read_image_paths_struct_extra_info_and_null_images(tmp_path):
    """What `datasets` writes for local image files ({bytes: None, path}), plain path lists (relative to
    the record file), extra_info as a struct column (verl's and EasyR1's layout), null images (pandas)."""
    import datasets

    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(png((1, 2, 3)))
    common = {"question": ["<image> how many?"], "answer": ["1"], "data_source": ["x"], "reward": ["math"]}
    pq.write_table(pa.table({"id": ["a"], "images": [["imgs/a.png"]], **common,
                             "extra_info": [{"choices": ["1", "2"], "precision": 2}]}), tmp_path / "paths.parquet")
    row = read_records(tmp_path / "paths.parquet")[0]
    assert load_image(row["images"][0]).getpixel((0, 0)) == (1, 2, 3)
    assert row["extra_info"] == {"choices": ["1", "2"], "precision": 2}
    hf = datasets.Dataset.from_dict({"id": ["a"], "images": [[str(tmp_path / "imgs" / "a.png")]], **common, "extra_info": ["{}"]},
                                    features=datasets.Features({"id": datasets.Value("string"), "images": datasets.List(datasets.Image()),
                                                                **{k: datasets.Value("string") for k in (*common, "extra_info")}}))
    hf.to_parquet(str(tmp_path / "hf.parquet"))
    assert load_image(read_records(tmp_path / "hf.parquet")[0]["images"][0]).getpixel((0, 0)) == (1, 2, 3)
    pq.write_table(pa.table({"id": ["a", "b"], "images": pa.array([None, ["imgs/gone.png"]], pa.list_(pa.string())),
                             "question": ["2 + 2?", "<image> how many?"], "answer": ["4", "1"], "data_source": ["x"] * 2,
                             "reward": ["math"] * 2, "extra_info": ["{}"] * 2}), tmp_path / "mixed.parquet")
    with pytest.raises(RecordError, match=r"row 1 \(id 'b'\): image 1 of 1 cannot be read from .*imgs/gone.png"):
        read_records(tmp_path / "mixed.parquet")
    assert [r["images"] for r in read_records(tmp_path / "mixed.parquet", skip_bad_rows=True)] == [[]]  # text-only row
    text_only = {"id": ["t"], "question": ["2 + 2?"], "answer": ["4"], "data_source": ["x"], "reward": ["math"]}
    for images in (pa.array([None], pa.null()), pa.array([[]], pa.list_(pa.null()))):  # all text-only, as pandas writes it
        categorical = pa.array(['{"precision": 2}']).dictionary_encode()
        pq.write_table(pa.table({**text_only, "images": images, "extra_info": categorical}), tmp_path / "text.parquet")
        [row] = read_records(tmp_path / "text.parquet")
        assert row["images"] == [] and row["extra_info"] == {"precision": 2}


def test_a_folder_of_parquet_shards_is_one_set_with_paths_read_inside_it(tmp_path):
    """A data set in shards (`data/train-00000-of-00002.parquet`, ...): the files in name order, and
    relative image paths read from the folder, not from the folder's parent."""
    shards = tmp_path / "data"
    (shards / "imgs").mkdir(parents=True)
    (shards / "imgs" / "a.png").write_bytes(png((4, 5, 6)))
    common = {"question": ["<image> how many?"], "answer": ["1"], "data_source": ["x"], "reward": ["math"], "extra_info": ["{}"]}
    pq.write_table(pa.table({"id": ["second"], "images": [["imgs/a.png"]], **common}), shards / "train-00001-of-00002.parquet")
    pq.write_table(pa.table({"id": ["first"], "images": [["imgs/a.png"]], **common}), shards / "train-00000-of-00002.parquet")
    (shards / "imgs" / "b.png").write_bytes(png((7, 8, 9)))
    (shards / "mine.py").write_text("def score(response, ground_truth, *, extra_info):\n    return 1.0\n")
    pq.write_table(pa.table({"id": ["third"], "images": [["imgs/b.png"]], **{**common, "reward": ["mine.py:score"]}}),
                   shards / "train-00002-of-00002.parquet")
    rows = read_records(shards)
    assert [r["id"] for r in rows] == ["first", "second", "third"]
    assert load_image(rows[1]["images"][0]).getpixel((0, 0)) == (4, 5, 6)
    assert [r["id"] for r in read_records(shards, start=1, stop=2)] == ["second"]
    # what a run fingerprints as the set's inputs: the image files and plugin files its rows name, within the slice
    assert image_files(shards) == [("imgs/a.png", shards / "imgs" / "a.png"), ("imgs/b.png", shards / "imgs" / "b.png")]
    assert image_files(shards, 0, 2) == [("imgs/a.png", shards / "imgs" / "a.png")]
    assert image_files(shards, 2) == [("imgs/b.png", shards / "imgs" / "b.png")]
    assert reward_plugin_files(shards) == [str(shards / "mine.py")] and reward_plugin_files(shards, 0, 2) == []
    with pytest.raises(RecordError, match=r"imgs: a folder of problem records holds .parquet files; this one holds none"):
        read_records(shards / "imgs")


def test_a_hub_data_folder_of_several_splits_is_refused_and_a_name_pattern_picks_one(tmp_path):
    """A Hugging Face data folder holds every split's shards; read as one set, its test rows ("test" sorts
    before "train") would be trained on. A name pattern (`data/train-*.parquet`) reads one split's shards."""
    from openvlt.workspace import fingerprint

    data = tmp_path / "data"
    data.mkdir()
    common = {"question": ["how many?"], "answer": ["1"], "images": pa.array([None], pa.null()), "reward": ["math"]}
    for name, ids in (("test-00000-of-00001", ["t0"]), ("train-00000-of-00002", ["a0"]), ("train-00001-of-00002", ["a1"])):
        pq.write_table(pa.table({"id": ids, **common}), data / f"{name}.parquet")
    with pytest.raises(RecordError, match=r"data: holds the files of the splits test, train \(test-00000-of-00001.parquet, "
                                          r"train-00000-of-00002.parquet, train-00001-of-00002.parquet\), which would be read "
                                          r"as one set, a held-out split trained on: name one split's, e.g. "
                                          rf"{re.escape(str(data / 'train-*.parquet'))}$"):
        read_records(data)
    with pytest.raises(RecordError, match=r"holds the files of the splits test, train"):
        read_records(data / "*.parquet")  # a pattern matching both splits, too
    plain = tmp_path / "plain"  # (as `openvlt data toyworld` writes a data set)
    plain.mkdir()
    for name in ("sft", "Test"):
        pq.write_table(pa.table({"id": [name], **common}), plain / f"{name}.parquet")
    with pytest.raises(RecordError, match=rf"the split test and others \(Test.parquet, sft.parquet\), .* e.g. {re.escape(str(plain / 'sft.parquet'))}$"):
        read_records(plain)
    sources = tmp_path / "sources"  # shards of two data sources, no split named: one set, as before
    sources.mkdir()
    for name in ("geo3k-00000-of-00001", "mathvista-00000-of-00002", "mathvista-00001-of-00002"):
        pq.write_table(pa.table({"id": [name], **common}), sources / f"{name}.parquet")
    assert len(read_records(sources)) == 3
    (tmp_path / "geo[v2].parquet").write_bytes((data / "test-00000-of-00001.parquet").read_bytes())
    assert [r["id"] for r in read_records(tmp_path / "geo[v2].parquet")] == ["t0"]  # a file named like a pattern is a file
    rows = read_records(data / "train-*.parquet")
    assert [(r["id"], r["data_source"]) for r in rows] == [("a0", "train"), ("a1", "train")]
    assert [r["id"] for r in read_records(data / "train-*.parquet", start=1)] == ["a1"]
    assert [r["id"] for r in read_records(data / "test-*.parquet")] == ["t0"]
    with pytest.raises(RecordError, match=r"validation-\*.parquet: no file matches this name pattern"):
        read_records(data / "validation-*.parquet")
    before = fingerprint(data / "train-*.parquet")
    assert before is not None and fingerprint(data / "validation-*.parquet") is None
    pq.write_table(pa.table({"id": ["t1"], **common}), data / "test-00001-of-00001.parquet")
    assert fingerprint(data / "train-*.parquet") == before  # another split's shard is not an input
    pq.write_table(pa.table({"id": ["a2"], **common}), data / "train-00002-of-00002.parquet")
    assert fingerprint(data / "train-*.parquet") != before  # a shard more is


def test_an_image_the_processor_would_refuse_is_a_bad_row(tmp_path):
    _write_raw(tmp_path / "thin.parquet", [record(0), record(1, images=[png(size=(3000, 10))])])
    with pytest.raises(RecordError, match=r"row 1 \(id 'p1'\): image 1 of 1 is 3000 x 10 pixels: an aspect ratio above 200"):
        read_records(tmp_path / "thin.parquet")


def test_data_source_and_extra_info_may_be_left_out_and_reward_too_when_the_caller_names_it(tmp_path):
    path = tmp_path / "mathvista_mini.parquet"
    pq.write_table(pa.table({"id": ["a"], "images": [[png()]], "question": ["<image> how many?"], "answer": ["3"]}), path)
    with pytest.raises(RecordError, match=r"mathvista_mini.parquet: missing column\(s\) \['reward'\]; a problem record needs "
                                          r"\['id', 'images', 'question', 'answer', 'reward'\] \(or judge every row .*reward.override\)"):
        read_records(path)
    [row] = read_records(path, reward="math")
    assert (row["data_source"], row["extra_info"], row["reward"]) == ("mathvista_mini", {}, "math")
    pq.write_table(pa.table({"id": ["a", "b"], "images": [[png()]] * 2, "question": ["<image> how many?"] * 2,
                             "answer": ["3", "4"], "reward": ["choice", None], "data_source": [None, "mine"]}), path)
    rows = read_records(path, reward="math")  # a value the file has is the file's; a null one is left out
    assert [(r["reward"], r["data_source"]) for r in rows] == [("choice", "mathvista_mini"), ("math", "mine")]
    with pytest.raises(RecordError, match=r"row 1 \(id 'b'\): missing field 'reward'"):
        read_records(path)
    pq.write_table(pa.table({"id": ["a"], "question": ["how many?"]}), path)
    with pytest.raises(RecordError, match=r"missing column\(s\) \['images', 'answer'\]; a problem record needs "
                                          r"\['id', 'images', 'question', 'answer'\]$"):
        read_records(path, reward="math")  # `reward` is not needed: the caller gives it


def test_images_column_of_the_wrong_type_is_named(tmp_path):
    pq.write_table(pa.table({
        "id": ["a"], "images": [1], "question": ["q"], "answer": ["1"], "data_source": ["x"], "reward": ["m"],
        "extra_info": ["{}"],
    }), tmp_path / "ints.parquet")
    with pytest.raises(RecordError, match="ints.parquet: column 'images' has type int64"):
        read_records(tmp_path / "ints.parquet")


def test_missing_column_and_missing_file_are_named(tmp_path):
    pq.write_table(pa.table({"id": ["a"], "question": ["q"]}), tmp_path / "thin.parquet")
    with pytest.raises(RecordError, match=r"thin.parquet: missing column\(s\) \['images', 'answer'"):
        read_records(tmp_path / "thin.parquet")
    with pytest.raises(FileNotFoundError, match="nowhere.parquet"):
        read_records(tmp_path / "nowhere.parquet")
    (tmp_path / "mine.jsonl").write_text('{"id": "a", "question": "q"}\n')
    with pytest.raises(RecordError, match=r"mine.jsonl: not a readable parquet file \(.*\); problem records are parquet: "
                                          r"openvlt data convert .*mine.jsonl --out FILE.parquet writes them"):
        read_records(tmp_path / "mine.jsonl")


def test_image_files_are_the_files_a_record_file_names_not_the_bytes_it_holds(tmp_path):
    """What a run fingerprints besides the record file itself (Workspace: an image replaced in place)."""
    from openvlt.records import image_files

    common = {"id": ["a", "b", "c"], "question": ["<image> how many?"] * 3, "answer": ["1"] * 3, "data_source": ["x"] * 3,
              "reward": ["math"] * 3, "extra_info": ["{}"] * 3}
    struct = pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    named = [[{"bytes": None, "path": "imgs/a.png"}], [{"bytes": png((1, 2, 3)), "path": "original.png"}],  # held: not named
             [{"bytes": None, "path": "https://example.com/c.png"}]]  # a URL: read_records refuses it
    pq.write_table(pa.table({**common, "images": pa.array(named, struct)}), tmp_path / "structs.parquet")
    assert image_files(tmp_path / "structs.parquet") == [("imgs/a.png", tmp_path / "imgs" / "a.png")]
    assert image_files(tmp_path / "structs.parquet", 1, 3) == []  # a slice: rows 1 and 2 only
    pq.write_table(pa.table({**common, "images": [["a.png"], None, ["/abs/b.png", "a.png"]]}), tmp_path / "paths.parquet")
    assert image_files(tmp_path / "paths.parquet") == [("a.png", tmp_path / "a.png"), ("/abs/b.png", Path("/abs/b.png"))]
    held = [[{"bytes": png((1, 2, 3)), "path": f"{i}.png"}] for i in range(3)]  # as the Hub's files are: names kept
    pq.write_table(pa.table({**common, "images": pa.array(held, struct)}), tmp_path / "held.parquet")
    (tmp_path / "notes.parquet").write_text("not parquet")
    assert image_files(tmp_path / "held.parquet") == [] and image_files(tmp_path / "notes.parquet") == []


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_transparent_and_16_bit_images_are_read_as_they_look():
    """A diagram drawn in black on transparent paper stays a diagram (on white, as vLLM and qwen-vl-utils put
    it), not a black square; 16-bit greys keep their gradient instead of clipping to white; plain images are
    unchanged."""
    drawing = np.zeros((16, 16, 4), dtype=np.uint8)
    drawing[8, :] = (0, 0, 0, 255)  # one black line, the rest transparent
    for mode in ("RGBA", "LA", "P"):
        image = Image.fromarray(drawing, "RGBA").convert(mode) if mode != "P" else Image.fromarray(drawing, "RGBA").convert("P")
        if mode == "P":
            image.info["transparency"] = image.getpixel((0, 0))
        pixels = np.asarray(load_image(_png(image)))
        assert pixels.shape == (16, 16, 3) and (pixels[8] == 0).all(), mode
        assert (np.delete(pixels, 8, axis=0) == 255).all(), mode
    gradient = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 257)  # 0 .. 65535
    grey = np.asarray(load_image(_png(Image.fromarray(gradient))))
    assert (grey[..., 0] == np.arange(256).reshape(16, 16)).all()
    for brightest in (200, 255, 256):  # a dark 16-bit image is dark, whatever its brightest pixel (200 of 65535 is 1 of 255)
        dark = np.full((4, 4), 200, dtype=np.uint16)
        dark[0, 0] = brightest
        assert set(np.asarray(load_image(_png(Image.fromarray(dark))))[..., 0].ravel()) == {1}, brightest
    colour = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert (np.asarray(load_image(_png(Image.fromarray(colour)))) == colour).all()


def test_a_categorical_reward_column_names_plugin_files_next_to_the_record_file(tmp_path, monkeypatch):
    """pandas writes a category column dictionary-encoded: its plugin paths are anchored like plain text,
    so a run from another folder (holding a file of the same name) still judges with the data's plugin."""
    from openvlt.records import reward_plugin_files

    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    for folder in (data, elsewhere):
        folder.mkdir()
        (folder / "mine.py").write_text("def score(response, ground_truth, *, extra_info):\n    return 1.0\n")
    write_records([record(i, reward="mine.py:score") for i in range(3)], data / "p.parquet")
    table = pq.read_table(data / "p.parquet")
    column = table.column("reward").combine_chunks().dictionary_encode()
    pq.write_table(table.set_column(table.schema.get_field_index("reward"), "reward", column), data / "p.parquet")
    assert pa.types.is_dictionary(pq.read_table(data / "p.parquet").schema.field("reward").type)
    monkeypatch.chdir(elsewhere)
    assert {row["reward"] for row in read_records(data / "p.parquet")} == {f"{data / 'mine.py'}:score"}
    assert reward_plugin_files(data / "p.parquet") == [str(data / "mine.py")]


def test_the_reward_column_names_the_module_files_of_entry_points_and_module_specs(tmp_path, monkeypatch):
    """Rows judged by an installed entry point (the toy world's) or a module on the path depend on that
    module's code as much as on a plugin file's; a built-in name depends on none of the user's."""
    import data_tools.toyworld.reward

    (tmp_path / "judges.py").write_text("def score(response, ground_truth, *, extra_info):\n    return 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    write_records([record(0, reward="toyworld"), record(1, reward="judges:score"), record(2, reward="math")],
                  tmp_path / "p.parquet")
    assert reward_plugin_files(tmp_path / "p.parquet") == [data_tools.toyworld.reward.__file__, str(tmp_path / "judges.py")]
    assert reward_plugin_files(tmp_path / "p.parquet", 2, 3) == []
    # run from another folder, the entry point's module is the same file (an editable install has no sys.path entry)
    repo = str(Path(data_tools.toyworld.reward.__file__).parents[2])
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", repo)])
    monkeypatch.chdir(tmp_path / "..")
    assert reward_plugin_files(tmp_path / "p.parquet", 0, 1) == [data_tools.toyworld.reward.__file__]


def test_a_slice_reads_only_the_row_groups_that_hold_it(tmp_path, monkeypatch):
    """A 10k-row slice of a 50 GB file must not cost the file's memory: only its row groups are read,
    across the files of a set too, and row numbers still count from the set's start."""
    shards = tmp_path / "shards"
    shards.mkdir()

    def shard(k: int, changes: dict[int, dict] = {}):
        rows = [record(30 * k + i, **changes.get(30 * k + i, {})) for i in range(30)]
        _write_raw(shards / f"train-0000{k}-of-00002.parquet", rows, row_group_size=10)

    shard(0), shard(1)
    read = []
    original = pq.ParquetFile.read_row_groups
    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", lambda self, groups, **kw: read.append(list(groups)) or original(self, groups, **kw))
    assert [r["id"] for r in read_records(shards / "train-00000-of-00002.parquet", start=12, stop=15)] == ["p12", "p13", "p14"]
    assert read == [[1]]
    read.clear()
    assert [r["id"] for r in read_records(shards, start=28, stop=32)] == ["p28", "p29", "p30", "p31"]
    assert read == [[2], [0]]  # the last group of the first file, the first of the second
    read.clear()
    shard(1, {41: {"answer": ""}})
    with pytest.raises(RecordError, match=r"row 41 \(id 'p41'\): empty 'answer'"):  # a bad row's number in the set
        read_records(shards, start=35, stop=45)
    assert read == [[0, 1]]  # (small groups: read in one batch)
    assert len(read_records(shards, start=100)) == 0
    pq.write_table(pa.table({"id": ["x"], "answer": [2], "question": ["q"], "reward": ["math"], "data_source": ["s"],
                             "extra_info": ["{}"], "images": pa.array([[]], pa.list_(pa.binary()))}), shards / "train-00002-of-00002.parquet")
    with pytest.raises(RecordError, match=r"train-00002-of-00002.parquet has other columns or types than .*train-00000-of-00002"
                                          r".parquet \(Unable to merge: Field answer has incompatible types: string vs int64\)"):
        read_records(shards)  # (the shard at fault named)
    pq.write_table(pa.table({"id": ["x"], "question": ["q"], "answer": ["2"]}), shards / "train-00002-of-00002.parquet")
    with pytest.raises(RecordError, match=r"train-00002-of-00002.parquet lacks the column\(s\) \['images', 'data_source', "
                                          r"'reward', 'extra_info'\] that .*train-00000-of-00002.parquet has"):
        read_records(shards)
