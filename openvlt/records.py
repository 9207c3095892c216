"""Problem records: the rows every openvlt stage reads and writes (parquet, through `datasets`).

A problem record is one row with these columns (shared/ARCHITECTURE.md):

    id           unique, non-empty; later stages keep it so every row traces back to its problem
    images       list of images (encoded bytes, or file paths that are read in at write time)
    question     text with exactly one `<image>` placeholder per image
    answer       ground truth, non-empty
    data_source  where the problem came from ("toyworld", "mathvista", ...)
    reward       name of the reward plugin that judges answers to this problem (a relative plugin file,
                 `mine.py:score`, is the one next to the record file, else the working directory's)
    extra_info   dict of whatever the reward needs (choices, answer_type, precision, ...)

Later stages add columns (caption, traces, ...) and never drop `id`.

On disk: images are a `datasets` `List(Image())` column (struct of bytes and path), stored encoded
and decoded only when a stage needs pixels (`load_image`). `extra_info` is stored as a JSON string,
because different data sources carry different keys and types, which a parquet struct column
cannot hold without inventing nulls; `Records` hands it back as a dict.

Every read and write validates every row. A bad row raises `RecordError` naming the file, the row
and the reason; with `skip_bad_rows=True` bad rows are written to a quarantine file (JSON lines,
images base64-encoded, nothing lost) and the rest goes on.
"""
from __future__ import annotations

import base64
import io
import json
import logging
import re
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from openvlt.engines import IMAGE_PLACEHOLDER
from openvlt.files import writing
from openvlt.recipe import data_name, is_shard_set, pattern_matches

log = logging.getLogger(__name__)

CORE_COLUMNS = ("id", "images", "question", "answer", "data_source", "reward", "extra_info")
_STRING_COLUMNS = ("id", "question", "answer", "data_source", "reward")


class RecordError(ValueError):
    """A row that breaks the problem-record contract; the message names file, row and reason.

    `others` are the file's further bad rows, (row, id, reason) each: the message names them too (the
    first `NAMED_BAD_ROWS`), so a file with three bad rows is fixed in one go, not in three reruns."""

    def __init__(self, path: str | Path, row: int | None, record_id: Any, reason: str,
                 others: list[tuple[int, Any, str]] = ()):
        self.path, self.row, self.record_id, self.reason = str(path), row, record_id, reason
        self.others = list(others)
        if not self.others:
            where = f"{path}" if row is None else f"{path}, {_row_label(row, record_id)}"
            super().__init__(f"{where}: {reason}")
            return
        rows = [(row, record_id, reason), *self.others]
        named = "; ".join(f"{_row_label(r, i)}: {why}" for r, i, why in rows[:NAMED_BAD_ROWS])
        more = f"; and {len(rows) - NAMED_BAD_ROWS} more" if len(rows) > NAMED_BAD_ROWS else ""
        super().__init__(f"{path}: {len(rows)} bad rows: {named}{more}")


NAMED_BAD_ROWS = 10


def _row_label(row: int, record_id: Any) -> str:
    return f"row {row}" + (f" (id {record_id!r})" if record_id else "")


class Records:
    """A validated record file, in memory as an Arrow table; rows come out as plain dicts.

    `rec["images"]` is a list of encoded image bytes, `rec["extra_info"]` a dict.
    """

    def __init__(self, dataset: datasets.Dataset, path: str | Path, source_rows: list[int] | None = None,
                 file_rows: int | None = None):
        self.dataset = dataset
        self.path = Path(path)
        self.source_rows = source_rows or list(range(len(dataset)))  # row numbers in the file (bad rows skipped)
        self.file_rows = len(dataset) if file_rows is None else file_rows  # rows in the file, read or not

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return _from_storage(self.dataset[index])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for row in self.dataset:
            yield _from_storage(row)

    @property
    def columns(self) -> list[str]:
        return list(self.dataset.column_names)

    def column(self, name: str) -> list[Any]:
        """One column as a list (no image decoding); `extra_info` comes back as dicts."""
        values = self.dataset[name]
        return [json.loads(v) for v in values] if name == "extra_info" else list(values)


def write_records(
    rows: Iterable[dict[str, Any]],
    path: str | Path,
    *,
    skip_bad_rows: bool = False,
    quarantine_path: str | Path | None = None,
) -> int:
    """Validate `rows` and write them to `path` atomically; return the number of rows written.

    Extra columns are kept. The file appears only once it is complete (written under a temporary
    name, then renamed), so a crash never leaves a half-written record file behind.
    """
    path = Path(path)
    good, bad, seen, numbers = [], [], set(), []
    for index, row in enumerate(rows):
        try:
            stored = _to_storage(row)
            reason = validate_record(stored)
        except Exception as exc:  # a value that cannot even be normalised (e.g. unreadable path)
            stored, reason = row, f"{type(exc).__name__}: {exc}"
        if reason is None and stored["id"] in seen:
            reason = f"duplicate id {stored['id']!r}"
        if reason is not None:
            bad.append((index, row, reason))
            continue
        seen.add(stored["id"])
        good.append(stored)
        numbers.append(index)
    if bad and not skip_bad_rows:
        raise _bad_rows_error(path, bad)
    if bad:
        _quarantine(bad, path, quarantine_path)
    features = _features(good, path, numbers)
    path.parent.mkdir(parents=True, exist_ok=True)
    with writing(path) as tmp, pq.ParquetWriter(str(tmp), schema=features.arrow_schema) as writer:
        for start in range(0, max(len(good), 1), _WRITE_BATCH):  # a batch at a time: one copy of the images is held,
            batch = good[start : start + _WRITE_BATCH]              # the rows', not three (as a whole table made)
            columns = {name: [row.get(name) for row in batch] for name in features}  # (a column some rows lack: None there)
            writer.write_table(pa.Table.from_pydict(features.encode_batch(columns), schema=features.arrow_schema))
    return len(good)


_WRITE_BATCH = 100  # rows per parquet row group, as `datasets` writes image data sets: a slice reads the groups it needs


def read_records(
    path: str | Path, *, skip_bad_rows: bool = False, quarantine_path: str | Path | None = None,
    decode_images: bool = False, start: int = 0, stop: int | None = None, announce: bool = True,
    reward: str | None = None,
) -> Records:
    """Read and validate rows [start, stop) of a record file (every row, every image header; with
    `decode_images`, every image's pixels: a truncated JPEG has a valid header and only fails when it
    is decoded). Rows outside the range are neither normalised nor checked; errors name file rows.
    Quarantined rows are logged unless `announce` is off (a caller that reads the file again and again
    says so once, itself). A file with no `data_source` gets its own name there, one with no `extra_info`
    `{}`, and one with no `reward` `reward` (e.g. the plugin that judges every row anyway) if given: a
    column, or a row's value (null)."""
    path = Path(path)
    if not path.exists() and not is_shard_set(path):
        raise FileNotFoundError(f"record file not found: {path}")
    table, file_rows = _read_rows(record_files(path), path, start, stop)
    table = _add_optional_columns(table, path, reward)
    missing = [c for c in CORE_COLUMNS if c not in table.column_names]
    if missing:
        hint = " (or judge every row with one plugin: a recipe's reward.override)" if "reward" in missing else ""
        if {"prompt", "problem", "image", "reward_model"} & set(table.column_names) or "id" in missing:
            hint += (f"; a verl, EasyR1 or Hugging Face layout: openvlt data convert {path} --out FILE.parquet "
                     "writes it as problem records (README, Data)")
        needed = [c for c in CORE_COLUMNS if c not in _OPTIONAL_COLUMNS and (c != "reward" or reward is None)]
        raise RecordError(path, None, None, f"missing column(s) {missing}; a problem record needs {needed}{hint}")
    offset = min(start, file_rows)
    try:
        table = _normalise_text(_normalise_extra_info(_normalise_images(table, path)), folder_of(path))
        features = datasets.Features.from_arrow_schema(table.schema)  # images as bytes, not decoded: named, not
        features["images"] = datasets.List(datasets.Image(decode=False))  # cast (a cast copies every image)
        # (a fingerprint given: `datasets` would hash the whole table, images and all, to make one)
        try:
            dataset = datasets.Dataset(datasets.table.InMemoryTable(table), info=datasets.DatasetInfo(features=features),
                                       fingerprint=uuid.uuid4().hex)
        except ValueError as exc:  # (a type `datasets` has no feature for)
            raise RecordError(path, None, None, f"its columns cannot be read as a data set: {exc}") from exc
        # text Python cannot decode would stop the loop below with no row named: those rows are set apart first
        undecodable = _undecodable_text(table)
        rows = iter(dataset.select([i for i in range(len(dataset)) if i not in undecodable]) if undecodable else dataset)
        keep, bad, seen = [], [], set()
        for index in range(len(dataset)):
            if index in undecodable:
                row, reason = _raw_row(table, index), undecodable[index]
            else:
                row = next(rows)
                reason = validate_record(row, decode_images)
                if reason is None and row["id"] in seen:
                    reason = f"duplicate id {row['id']!r}"
            if reason is None:
                seen.add(row["id"])
                keep.append(index)
            else:
                bad.append((offset + index, row, reason))
    except UnicodeDecodeError as exc:  # inside a nested column (a struct extra_info, a list of paths)
        raise RecordError(path, None, None, f"a column holds text that is not UTF-8 ({exc})") from exc
    if bad and not skip_bad_rows:
        raise _bad_rows_error(path, bad)
    if bad:
        _quarantine(bad, path, quarantine_path, announce)
        dataset = dataset.select(keep)
    return Records(dataset, path, [offset + i for i in keep], file_rows)


_OPTIONAL_COLUMNS = ("data_source", "extra_info")


def _read_rows(files: list[str], path: Path, start: int, stop: int | None) -> tuple[pa.Table, int]:
    """Rows [start, stop) of the files taken as one set, and the set's row count. Only the row groups
    holding those rows are read: a slice of a 50 GB file costs the slice's memory, not the file's."""
    tables, offset = [], 0
    try:
        for file in files:
            reader = pq.ParquetFile(file, pre_buffer=False)  # (buffering a whole read doubles its memory)
            groups, first = [], None
            for g in range(reader.metadata.num_row_groups):
                rows = reader.metadata.row_group(g).num_rows
                if start < offset + rows and (stop is None or offset < stop):
                    groups.append(g)
                    first = offset if first is None else first
                offset += rows
            if groups or not tables and file == files[-1]:  # (none in range: the columns, for the checks below)
                table = pa.concat_tables([reader.read_row_groups(batch) for batch in _batches_of(reader, groups)]) \
                    if groups else reader.schema_arrow.empty_table()  # (a batch at a time: a whole read holds twice the rows)
                tables.append((file, table, first or 0))
    except Exception as exc:
        hint = (f"; problem records are parquet: openvlt data convert {path} --out FILE.parquet writes them "
                "(README, Data)") if path.suffix.lower() in (".jsonl", ".json", ".csv", ".arrow") else ""
        raise RecordError(path, None, None, f"not a readable parquet file ({exc}){hint}") from exc
    first_file, first_columns = tables[0][0], tables[0][1].column_names
    for file, t, _ in tables[1:]:  # (a shard lacking a column would read as rows with that field missing)
        if lacking := [c for c in CORE_COLUMNS if c in first_columns and c not in t.column_names]:
            raise RecordError(path, None, None, f"{file} lacks the column(s) {lacking} that {first_file} has")
    try:
        table = pa.concat_tables([t for _, t, _ in tables], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        other = next(file for file, t, _ in tables if not t.schema.equals(tables[0][1].schema))
        raise RecordError(path, None, None, f"{other} has other columns or types than {first_file} ({exc})") from exc
    begin = tables[0][2]  # the set's row number of the table's first row
    end = offset if stop is None else min(stop, offset)
    return table.slice(min(start, offset) - begin if table.num_rows else 0, max(0, end - min(start, offset))), offset


def _batches_of(reader: pq.ParquetFile, groups: list[int], limit: int = 64 * 2**20) -> list[list[int]]:
    """Row groups in runs of about `limit` bytes: read one run at a time, a read's buffers stay small, and
    a file of tiny row groups (one row each) is not read as thousands of one-row chunks."""
    batches: list[list[int]] = [[]]
    size = 0
    for g in groups:
        if batches[-1] and size >= limit:
            batches.append([])
            size = 0
        batches[-1].append(g)
        size += reader.metadata.row_group(g).total_byte_size
    return batches


def _add_optional_columns(table: pa.Table, path: Path, reward: str | None) -> pa.Table:
    """What a record file may leave out, filled in: its name as `data_source`, no extra information
    (a null one: `_normalise_extra_info`), and `reward` when the caller names the plugin."""
    fill = {"data_source": data_name(path), "extra_info": "{}", "reward": reward}
    for name, value in fill.items():
        if value is None:
            continue
        if name not in table.column_names:
            table = table.append_column(name, pa.array([value] * table.num_rows, pa.string()))
        elif name != "extra_info" and table.column(name).null_count and _is_text_or_null(table.schema.field(name).type):
            column = table.column(name).cast(pa.string())
            table = table.set_column(table.schema.get_field_index(name), name, pc.fill_null(column, value))
    return table


def _is_text_or_null(kind: pa.DataType) -> bool:
    return _is_text(kind) or pa.types.is_null(kind)


def image_files(path: str | Path, start: int = 0, stop: int | None = None) -> list[tuple[str, Path]]:
    """The image files rows [start, stop) of a record file name instead of holding their bytes: (the name
    as written, the file `read_records` reads: next to the record file), each once. They are part of what
    the rows hold, so a run's fingerprint of its data covers them. Only names are read, never image bytes
    into Python; [] for a file that holds its images, or that is no readable record file."""
    path = Path(path)
    if is_shard_set(path):
        return _in_each_file(image_files, path, start, stop)
    try:
        reader = pq.ParquetFile(path)
        kind = reader.schema_arrow.field("images").type
        item = _list_item(kind)
        if item is not None and pa.types.is_struct(item) and item.get_field_index("path") >= 0:
            leaves = {c.path.rsplit(".", 1)[-1]: c.path for c in reader.schema if c.path.startswith("images.")}
            if "bytes" in leaves and _never_null(reader, leaves["bytes"]):
                return []  # every image held: the common case, known from the footer
            column = reader.read(columns=[leaves[f] for f in ("bytes", "path") if f in leaves]).column("images")
        elif item is not None and _is_text(item):
            column = reader.read(columns=["images"]).column("images")
        else:
            return []
    except Exception:  # not a record file: reading it names what is wrong
        return []
    column = column.slice(start, None if stop is None else max(0, stop - start)).combine_chunks()
    images = column.flatten()
    if pa.types.is_struct(images.type):  # as `_image_struct` reads one: the bytes, else the file the path names
        fields = dict(zip([f.name for f in images.type], images.flatten()))
        held = fields.get("bytes")
        named = pc.is_valid(fields["path"]) if held is None else pc.and_kleene(
            pc.or_kleene(pc.is_null(held), pc.equal(pc.binary_length(held), 0)), pc.is_valid(fields["path"]))
        images = pc.filter(fields["path"], named)
    names = dict.fromkeys(name for name in images.to_pylist() if name and "://" not in name)
    return [(name, folder_of(path) / name) for name in names]


def folder_of(path: Path) -> Path:
    """Where a record file's relative image paths and plugin files are read from: its folder, or, for
    a folder of parquet files (read as one set, the files in name order), that folder."""
    return path if path.is_dir() else path.parent


_HUB_SHARD = re.compile(r"(?P<split>.+?)-\d{5}-of-\d{5}(?:-[0-9a-f]+)?\.parquet")  # train-00000-of-00004.parquet
_HELD_OUT_SPLITS = ("test", "testmini", "validation", "val", "valid", "dev", "eval")


def _split_of(file: Path) -> str | None:
    """The split a shard belongs to, as its name says (`train-00000-of-00004.parquet`, `test.parquet`)."""
    match = _HUB_SHARD.fullmatch(file.name)
    name = (match["split"] if match else file.stem).lower()
    return name if name in ("train", *_HELD_OUT_SPLITS) else None


def record_files(path: Path) -> list[str]:
    """The parquet files a data path names: itself, or a set's shards (`parquet_files`)."""
    return parquet_files(path) if is_shard_set(path) else [str(path)]


def parquet_files(path: Path) -> list[str]:
    """The record files of a set of shards, in name order: a folder's `.parquet` files (not its
    subfolders: images may live there), or the files a name pattern matches. A folder holding the shards of
    several splits (`train-00000-of-00002.parquet`, `test-00000-of-00001.parquet`) is refused: read as one
    set, its test rows would be trained on."""
    if not path.is_dir():
        files = [str(p) for p in pattern_matches(path)]
        if not files:
            raise RecordError(path, None, None, "no file matches this name pattern")
    else:
        files = sorted(str(p) for p in path.glob("*.parquet") if p.is_file())
    if not files:
        saved = (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()
        raise RecordError(path, None, None, "a folder of problem records holds .parquet files; this one holds none" + (
            f" (a datasets save_to_disk folder: openvlt data convert {path} --out FILE.parquet writes it as problem "
            "records)" if saved else ""))
    splits = {_split_of(Path(f)): f for f in files}  # split name (None: no split named) -> its first file
    named = sorted(s for s in splits if s)
    if len(named) > 1 or len(splits) > 1 and set(named) & set(_HELD_OUT_SPLITS):  # two splits, or test.parquet among others
        split, file = ("train", splits["train"]) if "train" in splits else (None, splits.get(None, files[0]))
        example = folder_of(path) / f"{split}-*.parquet" if split and _HUB_SHARD.fullmatch(Path(file).name) else file
        which = f"the splits {', '.join(named)}" if len(named) > 1 else f"the split {named[0]} and others"
        shown = ", ".join(Path(f).name for f in files[:4]) + (", ..." if len(files) > 4 else "")
        raise RecordError(path, None, None, f"holds the files of {which} ({shown}), which would be read as one set, "
                          f"a held-out split trained on: name one split's, e.g. {example}")
    return files


def _in_each_file(read: Callable[[Path, int, int | None], list], folder: Path, start: int, stop: int | None) -> list:
    """`read` over a set's files, rows [start, stop) of them taken as one set; each result once."""
    found: dict[Any, None] = {}
    offset = 0
    try:
        files = [(file, pq.ParquetFile(file).metadata.num_rows) for file in parquet_files(folder)]
    except Exception:  # no record files: reading the set names what is wrong
        return []
    for file, rows in files:
        if (stop is None or offset < stop) and start < offset + rows:
            found.update(dict.fromkeys(read(Path(file), max(0, start - offset), None if stop is None else stop - offset)))
        offset += rows
    return list(found)


def reward_plugin_files(path: str | Path, start: int = 0, stop: int | None = None) -> list[str]:
    """The plugin files (absolute) that the `reward` column of rows [start, stop) names, each once: the
    code that judges those rows, found as `read_records` anchors it (next to the record file, else in the
    working directory), and the module files of module specs and entry points (`plugin_files`). Only that
    column is read; [] for a file that is no readable record file."""
    from rewards.registry import RewardError, plugin_files

    path = Path(path)
    if is_shard_set(path):
        return _in_each_file(reward_plugin_files, path, start, stop)
    try:
        column = pq.read_table(path, columns=["reward"]).column("reward")
        specs = column.slice(start, None if stop is None else max(0, stop - start)).unique().to_pylist()
    except Exception:  # not a record file: reading it names what is wrong
        return []
    files: dict[str, None] = {}
    for spec in specs:
        if isinstance(spec, str) and spec.strip():
            try:
                files.update(dict.fromkeys(plugin_files(spec, base=folder_of(path))))
            except RewardError:  # an unreadable composition: the reward check names it
                pass
    return list(files)


def _never_null(reader: pq.ParquetFile, leaf: str) -> bool:
    """Whether the footer's statistics say column `leaf` has no null (and no empty list) in any row group."""
    meta = reader.metadata
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        chunk = next(group.column(c) for c in range(group.num_columns) if group.column(c).path_in_schema == leaf)
        stats = chunk.statistics
        if stats is None or not stats.has_null_count or stats.null_count:
            return False
    return True


def _undecodable_text(table: pa.Table) -> dict[int, str]:
    """Rows whose text columns hold bytes that are not UTF-8 (a writer that did not check): row -> reason."""
    found: dict[int, str] = {}
    for name in table.column_names:
        column = table.column(name)
        if not _is_text(column.type):
            continue
        try:
            column.validate(full=True)
            continue
        except pa.ArrowInvalid:
            pass
        for index, value in enumerate(column.cast(pa.large_binary()).to_pylist()):
            try:
                value is None or value.decode("utf-8")
            except UnicodeDecodeError as exc:
                found.setdefault(index, f"field {name!r} is not UTF-8 text (byte {value[exc.start]:#04x} at position {exc.start})")
    return found


def _raw_row(table: pa.Table, index: int) -> dict[str, Any]:
    """One row whose undecodable text stays bytes, so it is quarantined as it is."""
    row = {}
    for name in table.column_names:
        column = table.column(name)
        if not _is_text(column.type):
            row[name] = column[index].as_py()
            continue
        value = column.cast(pa.large_binary())[index].as_py()
        try:
            row[name] = value if value is None else value.decode("utf-8")
        except UnicodeDecodeError:
            row[name] = value
    return row


def validate_record(rec: dict[str, Any], decode_images: bool = False) -> str | None:
    """The reason `rec` (in storage form) breaks the contract, or None if it is a valid record."""
    for name in CORE_COLUMNS:
        if rec.get(name) is None:
            return f"missing field {name!r}"
    for name in _STRING_COLUMNS:
        if not isinstance(rec[name], str):
            return f"field {name!r} must be a string, got {type(rec[name]).__name__}"
        if not rec[name].strip():  # (a question may be its image alone: "<image>")
            return f"empty {name!r}"
    try:
        extra = json.loads(rec["extra_info"]) if isinstance(rec["extra_info"], str) else rec["extra_info"]
    except json.JSONDecodeError as exc:
        return f"extra_info is not valid JSON ({exc})"
    if not isinstance(extra, dict):
        return f"extra_info must be a dict, got {type(extra).__name__}"
    images = rec["images"]
    if not isinstance(images, list):
        return f"images must be a list, got {type(images).__name__}"
    placeholders = rec["question"].count(IMAGE_PLACEHOLDER)
    if placeholders != len(images):
        return f"question has {placeholders} {IMAGE_PLACEHOLDER} placeholder(s) but the row has {len(images)} image(s)"
    for k, image in enumerate(images):
        data = image.get("bytes") if isinstance(image, dict) else image
        if not isinstance(data, (bytes, bytearray)) or not data:
            where = image.get("path") if isinstance(image, dict) else None
            url = " (a URL: openvlt reads local files only; download the images first)" if where and "://" in where else ""
            return f"image {k + 1} of {len(images)} " + (f"cannot be read from {where}{url}" if where else "has no bytes")
        try:
            with Image.open(io.BytesIO(data)) as im:
                if max(im.size) > MAX_ASPECT_RATIO * min(im.size):
                    return (f"image {k + 1} of {len(images)} is {im.width} x {im.height} pixels: an aspect ratio above "
                            f"{MAX_ASPECT_RATIO} is refused by Qwen2-VL image processors")
                if decode_images:
                    im.draft(im.mode, (1, 1))  # JPEG: decode at 1/8 scale, which still reads all the data
                    im.load()
                else:
                    im.verify()
        except Exception as exc:
            why = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(exc))  # PIL names its buffer
            return f"image {k + 1} of {len(images)} cannot be decoded ({type(exc).__name__}: {why})"
    return None


def load_image(data: bytes | dict[str, Any]) -> Image.Image:
    """Decode one stored image (bytes, or the {'bytes', 'path'} struct) to an RGB PIL image: transparency
    on white, as vLLM and qwen-vl-utils do (a plain convert turns a diagram's transparent paper black),
    and 16-bit greys scaled to 8 bits (a plain convert clips them to white)."""
    with _open_stored(data) as im:
        if im.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
            grey = np.asarray(im, dtype=np.float64)
            if im.mode != "I" or grey.max(initial=0) > 255:  # 16-bit values (PNG's 16-bit greys open as "I" or "I;16")
                grey = grey / 257
            return Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8)).convert("RGB")
        if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
            paper = Image.new("RGBA", im.size, (255, 255, 255, 255))
            return Image.alpha_composite(paper, im.convert("RGBA")).convert("RGB")
        return im.convert("RGB")


def image_size(data: bytes | dict[str, Any]) -> tuple[int, int]:
    """(height, width) of one stored image, read from its header only."""
    with _open_stored(data) as im:
        return im.height, im.width


def _open_stored(data: bytes | dict[str, Any]) -> Image.Image:
    """PIL opens lazily: this reads the header; pixels are decoded only when asked for."""
    return Image.open(io.BytesIO(data["bytes"] if isinstance(data, dict) else data))


def _to_storage(row: dict[str, Any]) -> dict[str, Any]:
    """The row as it is stored: images as {'bytes', 'path'} structs, extra_info as JSON text."""
    out = dict(row)
    images = row.get("images")
    if isinstance(images, list):
        out["images"] = [_image_struct(image) for image in images]
    extra = row.get("extra_info")
    if isinstance(extra, dict):
        out["extra_info"] = json.dumps(extra, sort_keys=True, ensure_ascii=False)
    return out


def _image_struct(image: Any, folder: Path = Path()) -> dict[str, Any]:
    """Bytes only: `datasets` would drop the bytes of an image whose local path is also given,
    and a record file must stay self-contained when the original image files move. A file path is
    read in (relative to `folder`: the record file's, when one is read); one that cannot be read keeps
    its path, for validation to name."""
    if isinstance(image, dict):
        image = image.get("bytes") or image.get("path")
    if image is None:
        return {"bytes": None, "path": None}  # validation reports it as an image with no bytes
    if isinstance(image, (bytes, bytearray)):
        return {"bytes": bytes(image), "path": None}
    if isinstance(image, str) and "://" in image:
        return {"bytes": None, "path": image}  # a URL: validation names it
    if isinstance(image, (str, Path)):
        file = folder / image  # an absolute `image` stays as it is
        try:
            return {"bytes": file.read_bytes(), "path": None}
        except OSError:
            return {"bytes": None, "path": str(file)}
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": None}
    raise TypeError(f"unsupported image value of type {type(image).__name__}")


MAX_ASPECT_RATIO = 200  # Qwen2-VL's smart_resize refuses longer / shorter side beyond this

_IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _normalise_images(table: pa.Table, path: Path) -> pa.Table:
    """Accept what other tools write too: a list of raw bytes, of {bytes, path} structs (as `datasets`
    writes them, with only `path` for local files), or of file paths; paths are read relative to the
    record file's folder. A null list is a text-only row."""
    kind = table.schema.field("images").type
    item = _list_item(kind)
    if pa.types.is_null(kind) or (item is not None and pa.types.is_null(item)):  # no image in any row (pandas)
        column = pa.array([[] for _ in range(table.num_rows)], type=pa.list_(_IMAGE_STRUCT))
        return table.set_column(table.schema.get_field_index("images"), "images", column)
    structs = item is not None and pa.types.is_struct(item) and item.get_field_index("bytes") >= 0
    if item is not None and item.equals(_IMAGE_STRUCT) and table.column("images").null_count == 0 and not any(
            chunk.flatten().field("bytes").null_count for chunk in table.column("images").chunks):
        if pa.types.is_list(kind):
            return table  # (a large list, as `datasets` writes `LargeList(Image())`: its offsets made a list's)
        return table.set_column(table.schema.get_field_index("images"), "images",
                                table.column("images").cast(pa.list_(_IMAGE_STRUCT)))
    if item is None or not (structs or _is_text(item) or pa.types.is_binary(item) or pa.types.is_large_binary(item)):
        raise RecordError(path, None, None, f"column 'images' has type {kind}; expected a list of images "
                          "(encoded bytes, {bytes, path} structs or file paths)")
    rows, folder = table.column("images").to_pylist(), folder_of(path)
    column = pa.array(
        [[] if row is None else [None if im is None else _image_struct(im, folder) for im in row] for row in rows],
        type=pa.list_(_IMAGE_STRUCT),
    )
    return table.set_column(table.schema.get_field_index("images"), "images", column)


def _normalise_text(table: pa.Table, folder: Path) -> pa.Table:
    """Integer ids and answers (a common layout) as text; reward plugin files named by a relative path
    made absolute, as image paths are read: next to the record file (else in the working directory), so
    a run resumed from another folder judges with the same file."""
    from rewards.registry import RewardError, canonical_spec

    for i, field in enumerate(table.schema):  # a pandas category (dictionary-encoded): its values, as text columns are
        if pa.types.is_dictionary(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(field.type.value_type))
    for name in ("id", "answer"):
        column = table.column(name)
        if pa.types.is_floating(column.type) and pc.all(pc.equal(pc.floor(column), column)).as_py() is not False:
            try:  # pandas' integers with a missing value: floats, the missing one NaN (null)
                column = column.cast(pa.int64())
            except pa.ArrowInvalid:  # inf, 1e20: no integers; validation names the row
                pass
        if pa.types.is_integer(column.type):
            table = table.set_column(table.schema.get_field_index(name), name, column.cast(pa.string()))
    if not _is_text(table.schema.field("reward").type):
        return table  # validation names the type
    specs = table.column("reward").to_pylist()
    anchored = {}
    for spec in {s for s in specs if s is not None and ".py" in s}:
        try:
            anchored[spec] = canonical_spec(spec, base=folder)
        except RewardError:  # an unreadable composition: the reward check names it
            pass
    if all(absolute == spec for spec, absolute in anchored.items()):
        return table
    return table.set_column(table.schema.get_field_index("reward"), "reward",
                            pa.array([anchored.get(s, s) for s in specs], pa.string()))


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _list_item(kind: pa.DataType) -> pa.DataType | None:
    """The item type of a list column's type; None for any other type."""
    return kind.value_type if pa.types.is_list(kind) or pa.types.is_large_list(kind) else None


def _normalise_extra_info(table: pa.Table) -> pa.Table:
    """`extra_info` as JSON text, also when another tool (verl's and EasyR1's parquet files) wrote it
    as a struct or a map column; a null one as no extra information."""
    kind = table.schema.field("extra_info").type
    if pa.types.is_dictionary(kind):  # pandas' categorical column
        table = table.set_column(table.schema.get_field_index("extra_info"), "extra_info",
                                 table.column("extra_info").cast(kind.value_type))
        kind = kind.value_type
    if _is_text(kind):
        column = table.column("extra_info")
        return table.set_column(table.schema.get_field_index("extra_info"), "extra_info", pc.fill_null(column, "{}")) if (
            column.null_count) else table

    def as_dict(value: Any) -> Any:
        return dict(value) if isinstance(value, list) and pa.types.is_map(kind) else value

    texts = ["{}" if v is None else v if isinstance(v, str) else json.dumps(as_dict(v), sort_keys=True, ensure_ascii=False, default=str)
             for v in table.column("extra_info").to_pylist()]
    return table.set_column(table.schema.get_field_index("extra_info"), "extra_info", pa.array(texts, pa.string()))


def _from_storage(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["images"] = [image["bytes"] for image in row["images"]]
    out["extra_info"] = json.loads(row["extra_info"])
    return out


def _features(rows: list[dict[str, Any]], path: Path, numbers: list[int]) -> datasets.Features:
    """Core columns typed explicitly; extra columns inferred by `datasets` from the rows (`numbers`: their
    row numbers as the caller gave them, for an error about a column that holds values of two types)."""
    core = {
        **{name: datasets.Value("string") for name in _STRING_COLUMNS},
        "images": datasets.List(datasets.Image()),
        "extra_info": datasets.Value("string"),
    }
    extra_names = list(dict.fromkeys(k for r in rows for k in r if k not in core))
    if not extra_names:
        return datasets.Features(core)
    try:
        inferred = _inferred(rows, extra_names)
    except (pa.ArrowException, TypeError, ValueError):
        for name in extra_names:
            _check_one_type(rows, name, path, numbers)
        raise
    return datasets.Features({**{k: core[k] for k in CORE_COLUMNS}, **inferred})


def _inferred(rows: list[dict[str, Any]], names: list[str]) -> datasets.Features:
    return datasets.Dataset.from_list([{k: r.get(k) for k in names} for r in rows]).features


def _check_one_type(rows: list[dict[str, Any]], name: str, path: Path, numbers: list[int]) -> None:
    """Raise a RecordError naming the first row whose `name` value cannot share a column with the rows'
    before it (found by halving: a column typed from the first n rows fails from that row on)."""
    def fails(n: int) -> Exception | None:
        try:
            _inferred(rows[:n], [name])
        except (pa.ArrowException, TypeError, ValueError) as exc:
            return exc
        return None

    low, high, error = 0, len(rows), fails(len(rows))  # the first `low` rows make a column, the first `high` none
    if error is None:
        return
    while high - low > 1:
        middle = (low + high) // 2
        if (failed := fails(middle)) is not None:
            high, error = middle, failed
        else:
            low = middle
    bad, value = high - 1, rows[high - 1].get(name)
    earlier = next((i for i in range(bad) if rows[i].get(name) is not None), None)
    if earlier is None:
        why = f"extra column {name!r} holds {_shown(value)}, a value a parquet column cannot hold ({error})"
    else:
        why = (f"extra column {name!r} holds {_shown(value)} here but {_shown(rows[earlier].get(name))} in "
               f"{_row_label(numbers[earlier], rows[earlier].get('id'))}: a column holds values of one type ({error})")
    raise RecordError(path, numbers[bad], rows[bad].get("id"), why)


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _bad_rows_error(path: Path, bad: list[tuple[int, dict[str, Any], str]]) -> RecordError:
    """Every bad row of the file in one error (the first ones named), so one fix covers them all."""
    (row, record, reason), *others = bad
    return RecordError(path, row, _id_of(record), reason, [(r, _id_of(rec), why) for r, rec, why in others])


def _id_of(row: Any) -> Any:
    return row.get("id") if isinstance(row, dict) else None


def _quarantine(bad: list[tuple[int, dict[str, Any], str]], path: Path, quarantine_path: str | Path | None,
                announce: bool = True) -> None:
    """Write bad rows, losslessly (images base64), to a JSON-lines side file next to `path`."""
    target = Path(quarantine_path) if quarantine_path else path.with_name(path.stem + ".quarantine.jsonl")
    target.parent.mkdir(parents=True, exist_ok=True)
    with writing(target) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for index, row, reason in bad:
            entry = {"file": str(path), "row": index, "id": _jsonable(row.get("id")), "reason": reason, "record": _jsonable(row)}
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
    if announce:
        log.warning("%s: %d bad row(s) quarantined in %s (first: row %d, %s)", path, len(bad), target, bad[0][0], bad[0][2])


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)
