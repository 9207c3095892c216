"""Problem records from the layouts other trainers' data sets come in: `openvlt data convert`.

A verl user has parquet files written by verl's `examples/data_preprocess` scripts (`prompt` messages,
`reward_model.ground_truth`, `extra_info.question`); an EasyR1 user has `problem` / `answer` /
`images` (hiyouga/geometry3k); a Hugging Face user a `save_to_disk` folder, JSON lines or CSV with an
`image` column. Each maps onto the problem-record columns (openvlt/records.py) the same way:

    question   --question KEY, else `question`, else verl's `extra_info.question` (the problem without
               the instruction verl's script appends), else `problem`, else the last user message of `prompt`
    answer     --answer KEY, else `answer`, else `reward_model.ground_truth`, else `extra_info.answer`
    id         --id KEY, else `id`, else the row number (`<name>-000012`)
    images     `images` (a list) or `image` (one); file paths are read relative to the source file
    reward     --reward SPEC, else the `reward` column, else `math`

A KEY may name a field of a struct or JSON column (`extra_info.question`). A question with no `<image>`
for a row's images gets them in front (MathVista-style questions name none). Other plain columns
(`data_source`, `ability`, ...) are kept. Rows that still break the contract are named, as any record
file's are; `skip_bad_rows` quarantines them next to the output instead.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from openvlt.records import IMAGE_PLACEHOLDER, RecordError, record_files, write_records
from openvlt.recipe import data_name, is_shard_set

_CONSUMED = ("question", "problem", "prompt", "answer", "reward_model", "id", "images", "image", "reward", "extra_info")


def convert_records(src: str | Path, out: str | Path, *, split: str | None = None, reward: str | None = None,
                    question_key: str | None = None, answer_key: str | None = None, id_key: str | None = None,
                    skip_bad_rows: bool = False) -> dict[str, Any]:
    """Write `src` (a parquet file, folder or shard pattern, a `save_to_disk` folder, JSON lines, JSON or
    CSV) to `out` as problem records; return what was done: rows in and out, where each column came from,
    how many questions got `<image>` placeholders, the columns left out."""
    src = Path(src)
    rows, name = _read_rows(src, split), data_name(src)
    if not rows:
        raise RecordError(src, None, None, "holds no rows")
    columns = set(rows[0])
    sources = {"question": question_key or _first_present(rows, ["question", "extra_info.question", "problem", "prompt"]),
               "answer": answer_key or _first_present(rows, ["answer", "reward_model.ground_truth", "extra_info.answer"]),
               "id": id_key or ("id" if "id" in columns else None)}
    for what in ("question", "answer"):
        if sources[what] is None:
            raise RecordError(src, None, None, f"no column to take the {what} from (columns: {sorted(columns)}); "
                              f"name one with --{what} KEY (a field of a struct column: extra_info.{what})")
    folder = src if src.is_dir() else src.parent
    kept_columns = [c for c in sorted(columns) if c not in _CONSUMED and all(_plain(r.get(c)) for r in rows)]
    records, placeholders_added = [], 0
    for index, row in enumerate(rows):
        try:
            images = [_anchored(im, folder) for im in _images(row)]
            text = _text(_lookup(row, sources["question"]))
            record = {c: row[c] for c in kept_columns}
            record.update(
                id=_scalar_text(_lookup(row, sources["id"])) if sources["id"] else f"{name}-{index:06d}",
                images=images, question=text, answer=_scalar_text(_lookup(row, sources["answer"])),
                data_source=row.get("data_source") or name, reward=reward or row.get("reward") or "math",
                extra_info=_dict(row.get("extra_info")))
        except (ValueError, TypeError, AttributeError) as exc:  # a value of another shape than its column's others
            raise RecordError(src, index, row.get("id"), f"cannot be converted ({type(exc).__name__}: {exc})") from exc
        if images and isinstance(text, str) and IMAGE_PLACEHOLDER not in text:
            record["question"], placeholders_added = IMAGE_PLACEHOLDER * len(images) + "\n" + text, placeholders_added + 1
        records.append(record)
    written = write_records(records, out, skip_bad_rows=skip_bad_rows)
    left_out = sorted(columns - set(kept_columns) - set(_CONSUMED))
    return {"in": len(rows), "out": written, "question": sources["question"], "answer": sources["answer"],
            "id": sources["id"] or "row number", "placeholders_added": placeholders_added, "left_out": left_out}


def _read_rows(src: Path, split: str | None) -> list[dict[str, Any]]:
    """The source's rows as plain Python values (images as stored: bytes, {bytes, path} or paths)."""
    import datasets

    if src.is_dir() and ((src / "dataset_dict.json").is_file() or (src / "state.json").is_file()):
        loaded = datasets.load_from_disk(str(src))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise RecordError(src, None, None, f"holds the splits {sorted(loaded)}: name one with --split")
            loaded = loaded[split]
        return loaded.data.table.to_pylist()
    if src.suffix.lower() == ".csv":  # every value as written: an answer 007 or 2.50 is not the number 7 or 2.5
        with open(src, newline="", encoding="utf-8") as f:
            names = next(csv.reader(f), [])
        text = pa_csv.ConvertOptions(column_types={n: pa.string() for n in names}, strings_can_be_null=True)
        return pa_csv.read_csv(src, convert_options=text).to_pylist()
    if src.suffix.lower() in (".jsonl", ".json"):
        return datasets.Dataset.from_json(str(src), keep_in_memory=True).data.table.to_pylist()
    if not src.exists() and not is_shard_set(src):
        raise FileNotFoundError(f"not found: {src}")
    return pq.read_table(record_files(src)).to_pylist()


def _first_present(rows: list[dict[str, Any]], keys: list[str]) -> str | None:
    """The first key any row has a value for (a first row's null question is that row's problem)."""
    return next((key for key in keys if any(_lookup(row, key) is not None for row in rows)), None)


def _lookup(row: dict[str, Any], key: str) -> Any:
    """`row[key]`, or a field of a struct or JSON-text column (`extra_info.question`)."""
    value: Any = row
    for part in key.split("."):
        if isinstance(value, str) and value.strip().startswith("{"):
            value = json.loads(value)
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _text(value: Any) -> Any:
    """A question: text, or verl's chat messages (the last user message's content, its image parts as
    `<image>`)."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        user = [m for m in value if m.get("role") == "user"] or value
        value = user[-1].get("content")
        if isinstance(value, list):  # OpenAI-style parts: [{"type": "image"}, {"type": "text", "text": ...}]
            parts = [_dict(p) if isinstance(p, str) and p.startswith("{") else p for p in value]  # (JSON lines: text)
            value = "".join(p if isinstance(p, str) else IMAGE_PLACEHOLDER if p.get("type") == "image"
                            else p.get("text") or "" for p in parts)
    return value


def _scalar_text(value: Any) -> Any:
    """An id or answer as text: numbers as written, a one-item list (verl's ground truths) its item."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _images(row: dict[str, Any]) -> list[Any]:
    """A row's images: a list (`images`), or one (`image`, the commonest Hugging Face column)."""
    images = row.get("images") if row.get("images") is not None else row.get("image")
    if images is None:
        return []
    return list(images) if isinstance(images, (list, tuple)) else [images]


def _anchored(image: Any, folder: Path) -> Any:
    """A relative image path read from the source's folder, as a record file's are."""
    if isinstance(image, dict) and not image.get("bytes") and image.get("path"):
        image = image["path"]
    if isinstance(image, str) and "://" not in image and not Path(image).is_absolute():
        return str(folder / image)
    return image


def _dict(value: Any) -> dict[str, Any]:
    """A struct or JSON-text column's value as a dict (invalid JSON raises, naming the row above)."""
    if isinstance(value, str) and value.strip():
        value = json.loads(value)
    return value if isinstance(value, dict) else {}


def _plain(value: Any) -> bool:
    """Whether a value can be carried through every stage as an extra column."""
    return value is None or isinstance(value, (str, int, float, bool))
