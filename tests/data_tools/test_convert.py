"""`openvlt data convert`: other trainers' data sets become problem records, each column from the right place."""
import json
import subprocess

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_tools.convert import convert_records
from openvlt.records import RecordError, load_image, read_records

from ..conftest import OPENVLT
from ..openvlt.test_records import png

VERL_INSTRUCTION = (" You FIRST think about the reasoning process as an internal monologue and then provide the final "
                    "answer. The final answer MUST BE put in \\boxed{}.")


def _verl_rows(n: int) -> list[dict]:
    """Rows as verl's examples/data_preprocess/geo3k.py writes them."""
    return [{"data_source": "hiyouga/geometry3k",
             "prompt": [{"role": "user", "content": f"<image>Find x + {i}." + VERL_INSTRUCTION}],
             "images": [{"bytes": png((i, 0, 0)), "path": None}], "ability": "math",
             "reward_model": {"style": "rule", "ground_truth": str(10 + i)},
             "extra_info": {"split": "train", "index": i, "answer": str(10 + i), "question": f"<image>Find x + {i}."}}
            for i in range(n)]


def test_a_verl_file_takes_the_clean_question_and_verls_ground_truth(tmp_path):
    pq.write_table(pa.Table.from_pylist(_verl_rows(3)), tmp_path / "train.parquet")
    done = convert_records(tmp_path / "train.parquet", tmp_path / "out.parquet")
    assert done == {"in": 3, "out": 3, "question": "extra_info.question", "answer": "reward_model.ground_truth",
                    "id": "row number", "placeholders_added": 0, "left_out": []}
    rows = read_records(tmp_path / "out.parquet")
    assert [(r["id"], r["question"], r["answer"], r["reward"], r["data_source"], r["ability"]) for r in rows][1] == (
        "train-000001", "<image>Find x + 1.", "11", "math", "hiyouga/geometry3k", "math")
    assert rows[2]["extra_info"]["index"] == 2 and load_image(rows[2]["images"][0]).getpixel((0, 0)) == (2, 0, 0)
    # without extra_info.question: the prompt's last user message, verl's instruction and all
    plain = [{k: v for k, v in row.items() if k != "extra_info"} for row in _verl_rows(2)]
    pq.write_table(pa.Table.from_pylist(plain), tmp_path / "plain.parquet")
    assert convert_records(tmp_path / "plain.parquet", tmp_path / "plain_out.parquet", reward="0.9*math+0.1*format")["question"] == "prompt"
    row = read_records(tmp_path / "plain_out.parquet")[0]
    assert row["question"] == "<image>Find x + 0." + VERL_INSTRUCTION and row["reward"] == "0.9*math+0.1*format"


def test_easyr1_and_hugging_face_layouts(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(png((9, 9, 9)))
    easyr1 = [{"problem": "<image>How many?", "answer": 3, "images": [{"bytes": png(), "path": None}]}]
    (tmp_path / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(easyr1), tmp_path / "data" / "train-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(easyr1), tmp_path / "data" / "test-00000-of-00001.parquet")
    done = convert_records(tmp_path / "data" / "train-*.parquet", tmp_path / "e.parquet")
    [row] = read_records(tmp_path / "e.parquet")
    assert done["question"] == "problem" and (row["id"], row["answer"], row["data_source"]) == ("train-000000", "3", "train")
    # JSON lines with one `image` path (relative to the file), a question naming no image: <image> put in front
    lines = [{"id": "q1", "image": "img/a.png", "question": "What colour?", "answer": "grey", "extra_info": {"k": 1}}]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert convert_records(tmp_path / "q.jsonl", tmp_path / "q.parquet")["placeholders_added"] == 1
    [row] = read_records(tmp_path / "q.parquet")
    assert row["question"] == "<image>\nWhat colour?" and load_image(row["images"][0]).getpixel((0, 0)) == (9, 9, 9)
    assert row["extra_info"] == {"k": 1}
    # a save_to_disk DatasetDict: one split named
    saved = datasets.DatasetDict({"train": datasets.Dataset.from_list([{"id": "s", "question": "1+1?", "answer": "2"}]),
                                  "test": datasets.Dataset.from_list([{"id": "t", "question": "2+2?", "answer": "4"}])})
    saved.save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(RecordError, match=r"saved: holds the splits \['test', 'train'\]: name one with --split"):
        convert_records(tmp_path / "saved", tmp_path / "s.parquet")
    convert_records(tmp_path / "saved", tmp_path / "s.parquet", split="test")
    assert [(r["id"], r["images"]) for r in read_records(tmp_path / "s.parquet")] == [("t", [])]  # text-only
    with pytest.raises(RecordError, match=r"no column to take the answer from .*name one with --answer KEY"):
        pq.write_table(pa.Table.from_pylist([{"question": "q", "solution": "4"}]), tmp_path / "noanswer.parquet")
        convert_records(tmp_path / "noanswer.parquet", tmp_path / "x.parquet")
    convert_records(tmp_path / "noanswer.parquet", tmp_path / "x.parquet", answer_key="solution")
    assert read_records(tmp_path / "x.parquet")[0]["answer"] == "4"


def test_the_command_says_where_each_column_came_from_and_a_verl_file_run_directly_points_at_it(tmp_path):
    pq.write_table(pa.Table.from_pylist(_verl_rows(2)), tmp_path / "train.parquet")
    with pytest.raises(RecordError, match=r"missing column\(s\) \['id', 'question', 'answer', 'reward'\].*a verl, EasyR1 or "
                                          r"Hugging Face layout: openvlt data convert .*train.parquet --out FILE.parquet"):
        read_records(tmp_path / "train.parquet")
    done = subprocess.run([OPENVLT, "data", "convert", str(tmp_path / "train.parquet"), "--out", str(tmp_path / "o.parquet")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (f"wrote 2 of 2 problem records to {tmp_path / 'o.parquet'}: question from "
                                   "extra_info.question, answer from reward_model.ground_truth, id from row number")
    bad = [{"question": "<image> q", "answer": "1", "images": []}]  # a placeholder with no image
    pq.write_table(pa.Table.from_pylist(bad, schema=pa.schema([("question", pa.string()), ("answer", pa.string()),
                                                                  ("images", pa.list_(pa.binary()))])), tmp_path / "bad.parquet")
    done = subprocess.run([OPENVLT, "data", "convert", str(tmp_path / "bad.parquet"), "--out", str(tmp_path / "b.parquet"),
                           "--skip-bad-rows"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "none of the 1 rows is a usable problem (1 bad rows quarantined next to it)" in done.stderr
    assert json.loads((tmp_path / "b.quarantine.jsonl").read_text())["id"] == "bad-000000"


def test_values_are_taken_as_written_and_a_row_that_cannot_be_converted_is_named(tmp_path):
    (tmp_path / "a.csv").write_text("id,question,answer\nc1,Code?,007\nc2,Price?,2.50\nc3,Big?,12345678901234567890123\n")
    convert_records(tmp_path / "a.csv", tmp_path / "a.parquet")
    assert [r["answer"] for r in read_records(tmp_path / "a.parquet")] == ["007", "2.50", "12345678901234567890123"]
    rows = [{"id": "n", "question": None, "answer": "1"}, {"id": "m", "question": "2-1?", "answer": "1"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "null.parquet")  # the question column is still found
    with pytest.raises(RecordError, match=r"n.parquet, row 0 \(id 'n'\): missing field 'question'"):
        convert_records(tmp_path / "null.parquet", tmp_path / "n.parquet")
    (tmp_path / "x.jsonl").write_text('{"id": "j1", "question": "q", "answer": "1", "extra_info": "{not json"}\n')
    with pytest.raises(RecordError, match=r"x.jsonl, row 0 \(id 'j1'\): cannot be converted \(JSONDecodeError"):
        convert_records(tmp_path / "x.jsonl", tmp_path / "x.parquet")
