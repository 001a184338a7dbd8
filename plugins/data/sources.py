"""File data sources: JSONL, JSON, CSV/TSV, Parquet and Hugging Face datasets saved to disk.

One class, :class:`FileSource`, reads every format; it is registered under five names that differ
only in the default of ``data.format``:

- ``data=file``: the format is picked from the extension (``.jsonl``/``.ndjson``/``.jsonl.gz``,
  ``.json``, ``.csv``, ``.tsv``, ``.parquet``/``.pq``; a directory is a ``datasets`` save);
- ``data=jsonl``, ``data=csv``, ``data=parquet``, ``data=hf_disk``: that format, whatever the name.

Each row becomes one :class:`alignfw.types.Record`. The columns named by ``data.*_key`` fill the
record's fields, and every other column goes to ``Record.meta``. What kind of record a file holds
(prompt, sft, ranked, preference, feedback as in MOSS-RLHF, score, reference) is ``data.kind``,
or, with ``kind=auto``, what the first row's columns say; every row must then have the columns of
that kind. Row conventions follow Hugging Face TRL's dataset formats
(https://huggingface.co/docs/trl/dataset_formats): ``prompt``/``chosen``/``rejected`` for
preferences, ``prompt``/``completion`` pairs for SFT (``completion`` is read when the row has no
``response`` column and ``data.response_key`` is left at its default).

Conversational rows (TRL's conversational format) hold lists of ``{"role", "content"}`` messages
instead of strings: ``prompt`` and ``completion``/``chosen``/``rejected``/``responses`` as message
lists, ``messages`` (``data.messages_key``) for a whole conversation whose last message is the
assistant's answer, or ``chosen``/``rejected`` conversations with an implicit shared prompt. In
CSV a message list is a JSON-encoded cell; in Parquet and ``datasets`` a list of structs. A row is
conversational when its prompt is a message list; an answer given as a string then becomes one
assistant message. Such records keep their messages in ``Record.conversation``; the pipeline renders
them with the model's chat template (:func:`alignfw.models.chat.render_records`).

Every problem with the data raises :class:`alignfw.exceptions.DataError` naming the file, the line
or row, the problem and the fix, e.g. ``line 3 of data.jsonl: missing column 'prompt' (columns
present: question, answer); set data.prompt_key=question``. Files are parsed with ``json``,
``csv``, ``pyarrow`` and ``datasets``; nothing is ever unpickled.

The eval split is either a second file (``data.eval_path``) or a deterministic, seeded sample of
the training file (``data.eval_fraction`` and ``data.seed``); ``records("eval")`` is empty when
neither is set.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import random
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

from alignfw.config import option, validate_options
from alignfw.exceptions import ConfigError, DataError, InvalidInputError
from alignfw.hookspecs import hookimpl
from alignfw.models.chat import check_messages, is_messages, plain_text
from alignfw.types import RECORD_KINDS, Conversation, Message, Record, UnrenderedChat

__all__ = [
    "CsvConfig",
    "FileSource",
    "FileSourceConfig",
    "HFDiskConfig",
    "JsonlConfig",
    "ParquetConfig",
    "detect_format",
    "row_to_record",
]

FORMATS = ("jsonl", "json", "csv", "tsv", "parquet", "hf_disk")
_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".jsonl.gz": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
#: the columns each record kind needs (Record field names), besides the prompt
REQUIRED: dict[str, tuple[str, ...]] = {
    "prompt": (),
    "sft": ("response",),
    "ranked": ("responses",),
    "preference": ("chosen", "rejected"),
    "feedback": ("response", "feedback"),
    "score": ("response", "score"),
    "reference": ("references",),
}
#: column names people commonly use for each field, to suggest a ``data.<field>_key=`` fix
_SYNONYMS: dict[str, tuple[str, ...]] = {
    "prompt": ("question", "instruction", "input", "query", "text", "source", "context"),
    "response": ("answer", "output", "completion", "target", "reply"),
    "responses": ("answers", "outputs", "completions", "ranked", "candidates"),
    "chosen": ("preferred", "better", "good", "winner", "response_chosen"),
    "rejected": ("dispreferred", "worse", "bad", "loser", "response_rejected"),
    "feedback": ("rating", "label", "thumbs", "vote"),
    "score": ("reward", "rating", "label", "value"),
    "references": ("reference", "refs", "target", "targets", "translation", "answer"),
}


@dataclass
class FileSourceConfig:
    """Options of the file data sources (``data=file data.path=train.jsonl``)."""

    path: Optional[str] = None  #: the training file (or ``datasets`` directory)
    format: str = option("auto", choices=("auto", *FORMATS))  #: "auto" (by extension), "jsonl", "json", "csv", "tsv", "parquet" or "hf_disk"
    eval_path: Optional[str] = None  #: a separate evaluation file
    eval_fraction: float = option(0.0, ge=0, lt=1)  #: or: hold out this fraction of ``path`` for evaluation
    seed: int = 0  #: seed of the ``eval_fraction`` split
    limit: Optional[int] = option(None, ge=1)  #: read at most this many rows of each file (before the split)
    kind: str = option("auto", choices=("auto", *RECORD_KINDS))  #: record kind every row must be ("auto": what the first row's columns say)
    prompt_key: str = "prompt"
    response_key: str = "response"
    responses_key: str = "responses"  #: k responses ranked best first (a list; JSON-encoded in CSV)
    chosen_key: str = "chosen"
    rejected_key: str = "rejected"
    feedback_key: str = "feedback"  #: +1 / -1 (also true / false, "+1" / "-1")
    score_key: str = "score"
    #: a whole conversation (message list) whose last message is the answer: prompt + response
    messages_key: str = "messages"
    reference_key: Optional[str] = None  #: a string or list of strings; None: "references", else "reference"
    split: str = "train"  #: hf_disk: the DatasetDict split used for training
    eval_split: Optional[str] = None  #: hf_disk: a DatasetDict split used for evaluation


@dataclass
class JsonlConfig(FileSourceConfig):
    """Options of the JSONL data source (one JSON object per line)."""

    format: str = "jsonl"


@dataclass
class CsvConfig(FileSourceConfig):
    """Options of the CSV data source (a header row, then one row per record)."""

    format: str = "csv"


@dataclass
class ParquetConfig(FileSourceConfig):
    """Options of the Parquet data source (needs ``pyarrow``)."""

    format: str = "parquet"


@dataclass
class HFDiskConfig(FileSourceConfig):
    """Options of the Hugging Face ``datasets.load_from_disk`` data source (needs ``datasets``)."""

    format: str = "hf_disk"


# --------------------------------------------------------------------------------------------
# Reading raw rows: each reader yields (where, row) with ``where`` like "line 3 of data.jsonl"
# --------------------------------------------------------------------------------------------

Rows = Iterator[tuple[str, dict[str, Any]]]


def detect_format(path: str, opt: str = "data") -> str:
    """The format of ``path`` from its extension; a directory is a ``datasets`` save (``hf_disk``).

    Raises:
        ConfigError: The extension is not one alignfw reads.
    """
    if os.path.isdir(path):
        return "hf_disk"
    lower = path.lower()
    for ext in sorted(_EXTENSIONS, key=len, reverse=True):  # longest first: ".jsonl.gz" is JSONL, not unknown
        if lower.endswith(ext):
            return _EXTENSIONS[ext]
    raise ConfigError(
        f"cannot tell the format of {path!r} from its extension; use one of {', '.join(_EXTENSIONS)} "
        f"or set {opt}.format to one of {', '.join(FORMATS)}"
    )


def _open_text(path: str):
    if path.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8", newline="")


def _bad_utf8(path: str) -> str | None:
    """Where the first invalid UTF-8 byte is: ``line 3, byte 7 of the line (invalid start byte)``."""
    opener = gzip.open if path.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    return f"line {lineno}, byte {e.start + 1} of the line: {e.reason}"
    except OSError:
        return None
    return None


def _read_jsonl(path: str, name: str) -> Rows:
    with _open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue  # blank lines (a trailing newline, spacing) are not records
            where = f"line {lineno} of {name}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{where}: not valid JSON ({e.msg} at column {e.colno}); each line of a JSONL file must be one "
                    "complete JSON object, e.g. {\"prompt\": \"...\"}"
                ) from None
            yield where, _expect_object(row, where)


def _read_json(path: str, name: str) -> Rows:
    with _open_text(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"{name}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if not isinstance(data, list):
        raise DataError(
            f"{name}: a .json data file must hold a list of objects ([{{\"prompt\": ...}}, ...]), got a {type(data).__name__}; "
            "for one object per line use a .jsonl file"
        )
    for i, row in enumerate(data, start=1):
        where = f"item {i} of {name}"
        yield where, _expect_object(row, where)


def _expect_object(row: Any, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object with named columns ({{\"prompt\": ...}}), got a {type(row).__name__}: {_short(row)}")
    return row


def _read_csv(path: str, name: str, delimiter: str) -> Rows:
    with _open_text(path) as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        header = reader.fieldnames or []
        if len(set(header)) != len(header):
            dupes = sorted({h for h in header if header.count(h) > 1})
            raise DataError(f"line 1 of {name}: duplicate column name(s) {', '.join(dupes)} in the header; rename them")
        for row in reader:
            where = f"line {reader.line_num} of {name}"
            if None in row:  # more cells than header names
                cells = len(header) + len(row[None])
                raise DataError(f"{where}: {cells} cells but the header names {len(header)} columns; quote cells that contain '{delimiter}'")
            if any(v is None for v in row.values()):
                raise DataError(f"{where}: {sum(v is not None for v in row.values())} cells but the header names {len(header)} columns")
            yield where, {k: (None if v == "" else v) for k, v in row.items()}  # an empty cell is a missing value


def _read_parquet(path: str, name: str) -> Rows:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"reading the Parquet file {name} needs pyarrow: pip install pyarrow") from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for a corrupt or non-Parquet file
        raise DataError(f"{name}: cannot read it as Parquet ({type(e).__name__}: {e}); is it really a Parquet file?") from None
    for i, row in enumerate(table.to_pylist(), start=1):
        yield f"row {i} of {name}", row


def _load_hf(path: str, name: str, split: str):
    try:
        import datasets
    except ImportError:
        raise DataError(f"reading the Hugging Face dataset {name} needs the datasets package: pip install datasets") from None
    try:
        ds = datasets.load_from_disk(path)
    except FileNotFoundError as e:
        raise DataError(f"{name}: not a dataset saved with Dataset.save_to_disk ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"{name}: the DatasetDict has no split {split!r} (splits: {', '.join(ds)}); set data.split / data.eval_split")
        ds = ds[split]
    elif split != "train":
        raise ConfigError(f"{name} is a single Dataset without splits, so split {split!r} does not exist; use data.eval_fraction instead")
    return ds


def _read_hf_disk(path: str, name: str, split: str) -> Rows:
    ds = _load_hf(path, name, split)
    for i, row in enumerate(ds, start=1):
        yield f"row {i} of {name}[{split}]", row


def read_rows(
    path: str, fmt: str, *, limit: Optional[int] = None, hf_split: str = "train", opt: str = "data"
) -> list[tuple[str, dict[str, Any]]]:
    """Read up to ``limit`` raw rows of a data file as ``(where, row)`` pairs.

    Args:
        path: The file, or a ``datasets`` directory.
        fmt: One of :data:`FORMATS`, or ``"auto"`` (by extension).
        limit: Read at most this many rows.
        hf_split: The split of a saved ``DatasetDict``.
        opt: The config node the messages name (``data.path``, or ``reward.path`` for a reward).

    Raises:
        DataError: The path is missing, the file is empty or a row cannot be parsed.
    """
    name = os.path.basename(path.rstrip("/")) or path
    _check_path(path, fmt, opt)
    if fmt == "auto":
        fmt = detect_format(path, opt)
    readers: dict[str, Callable[[], Rows]] = {
        "jsonl": lambda: _read_jsonl(path, name),
        "json": lambda: _read_json(path, name),
        "csv": lambda: _read_csv(path, name, ","),
        "tsv": lambda: _read_csv(path, name, "\t"),
        "parquet": lambda: _read_parquet(path, name),
        "hf_disk": lambda: _read_hf_disk(path, name, hf_split),
    }
    rows: list[tuple[str, dict[str, Any]]] = []
    try:
        for item in readers[fmt]():
            if limit is not None and len(rows) >= limit:
                break
            rows.append(item)
    except UnicodeDecodeError as e:
        raise DataError(f"{name}: not UTF-8 text ({_bad_utf8(path) or e.reason}); re-save it as UTF-8") from None
    if not rows:
        raise DataError(f"{name} ({path}) holds no records: the file is empty or has only a header; check {opt}.path")
    return rows


def _check_path(path: str, fmt: str, opt: str) -> None:
    if not os.path.exists(path):
        raise DataError(
            f"data file {path!r} does not exist (looked for {os.path.abspath(path)}); "
            f"check {opt}.path" + (" / data.eval_path" if opt == "data" else "") + " (relative paths are relative to the working directory)"
        )
    if os.path.isdir(path) and fmt not in ("auto", "hf_disk"):
        raise DataError(f"{path!r} is a directory, not a {fmt} file; point {opt}.path at the file, or use data=hf_disk for a saved dataset")
    if not os.path.isdir(path) and fmt == "hf_disk":
        raise DataError(f"{path!r} is a file; data=hf_disk needs the directory written by Dataset.save_to_disk")


# --------------------------------------------------------------------------------------------
# Rows to records
# --------------------------------------------------------------------------------------------


def _short(value: Any, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def _columns(cfg: FileSourceConfig, row: dict[str, Any]) -> dict[str, str]:
    """Record field -> the column that holds it (``reference_key=None``: "references", else "reference")."""
    ref = cfg.reference_key
    if ref is None:
        ref = "references" if "references" in row or "reference" not in row else "reference"
    response = cfg.response_key
    if response == "response" and "response" not in row and "completion" in row:
        response = "completion"  # TRL's prompt-completion rows
    return {
        "prompt": cfg.prompt_key,
        "response": response,
        "responses": cfg.responses_key,
        "chosen": cfg.chosen_key,
        "rejected": cfg.rejected_key,
        "feedback": cfg.feedback_key,
        "score": cfg.score_key,
        "references": ref,
    }


def _present(row: dict[str, Any], column: Optional[str]) -> bool:
    return column is not None and row.get(column) is not None


def infer_kind(row: dict[str, Any], columns: dict[str, Optional[str]]) -> str:
    """The record kind a row's columns describe, with :attr:`Record.kind`'s precedence."""
    has = {f for f, col in columns.items() if _present(row, col)}
    if {"chosen", "rejected"} & has:
        return "preference"
    for kind in ("ranked", "feedback", "score", "sft", "reference"):
        if set(REQUIRED[kind]) <= has:
            return kind
    return "prompt"


def _missing_column(where: str, field_name: str, column: str, row: dict[str, Any], mapped: set[str], why: str, opt: str) -> DataError:
    present = ", ".join(str(c) for c in row) or "none"
    key = "reference_key" if field_name == "references" else f"{field_name}_key"
    guess = next((s for s in _SYNONYMS.get(field_name, ()) if s in row and s not in mapped), "<column>")
    fix = f"set {opt}.{key}={guess}"
    if why and opt == "data":
        fix += f", or set data.kind to the kind the file holds (one of {', '.join(RECORD_KINDS)})"
    return DataError(f"{where}: missing column {column!r}{why} (columns present: {present}); {fix}")


def _as_str(value: Any, where: str, column: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: column {column!r} must be a string, got {type(value).__name__} {_short(value)}")
    return value


_LIST_START = re.compile(r"\s*\[")


def _json_list(text: str) -> Optional[list]:
    """``text`` decoded if it is a JSON-encoded list (how a CSV cell holds a list), else None."""
    if not _LIST_START.match(text):  # without copying the text (lstrip() would)
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, list) else None


def _as_str_list(value: Any, where: str, column: str, *, min_len: int, allow_str: bool) -> list[str]:
    items = value
    if isinstance(value, str):
        items = _json_list(value)
        if items is None and allow_str:
            items = [value]  # one reference given as a plain string
    if hasattr(items, "tolist"):  # numpy arrays from Parquet / datasets
        items = items.tolist()
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
        shape = "a string or a list of strings" if allow_str else 'a list of strings (JSON-encoded in CSV: ["a", "b"])'
        raise DataError(f"{where}: column {column!r} must be {shape}, got {type(value).__name__} {_short(value)}")
    if len(items) < min_len:
        raise DataError(f"{where}: column {column!r} needs at least {min_len} item(s), got {len(items)}")
    return list(items)


def _as_feedback(value: Any, where: str, column: str) -> int:
    if isinstance(value, bool):
        return 1 if value else -1
    if isinstance(value, str) and value.strip().lower() in ("1", "+1", "-1", "1.0", "-1.0", "true", "false"):
        return 1 if value.strip().lower() in ("1", "+1", "1.0", "true") else -1
    if isinstance(value, (int, float)) and value in (1, -1):
        return int(value)
    raise DataError(
        f"{where}: column {column!r} is feedback and must be +1 (good) or -1 (bad), as in MOSS-RLHF; got {_short(value)}. "
        "For graded scores use a score column (data.score_key) instead"
    )


def _as_score(value: Any, where: str, column: str) -> float:
    if isinstance(value, bool):
        raise DataError(f"{where}: column {column!r} must be a number, got bool {value}")
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: column {column!r} must be a number, got {type(value).__name__} {_short(value)}") from None
    if not math.isfinite(score):
        raise DataError(f"{where}: column {column!r} must be a finite number, got {value!r}")
    return score


_CONVERTERS: dict[str, Callable[[Any, str, str], Any]] = {
    "response": _as_str,
    "chosen": _as_str,
    "rejected": _as_str,
    "responses": lambda v, w, c: _as_str_list(v, w, c, min_len=2, allow_str=False),
    "feedback": _as_feedback,
    "score": _as_score,
    "references": lambda v, w, c: _as_str_list(v, w, c, min_len=1, allow_str=True),
}


def _messages_value(value: Any) -> Optional[list]:
    """``value`` as a message list if it is one (a CSV cell holds it JSON-encoded), else None."""
    if isinstance(value, str):
        value = _json_list(value)
    if hasattr(value, "tolist"):
        value = value.tolist()
    return list(value) if is_messages(value) else None


def _expand_conversation(row: dict[str, Any], where: str, cfg: FileSourceConfig) -> dict[str, Any]:
    """TRL's conversational shapes without an explicit prompt, as prompt + answer columns.

    - ``messages``: the last message (the assistant's) is the response, the ones before the prompt;
    - ``chosen`` / ``rejected`` conversations without a prompt: their longest shared beginning is
      the prompt, the rest the answers.
    """
    if _present(row, cfg.prompt_key):
        return row
    columns = _columns(cfg, row)
    if _present(row, cfg.messages_key):
        msgs = _messages_value(row[cfg.messages_key])
        if msgs is None:
            raise DataError(
                f"{where}: column {cfg.messages_key!r} must be a list of messages ({{\"role\": ..., \"content\": ...}}), "
                f"got {_short(row[cfg.messages_key])}"
            )
        msgs = check_messages(msgs, where, cfg.messages_key)
        if msgs[-1]["role"] != "assistant" or len(msgs) < 2:
            raise DataError(
                f"{where}: the conversation in column {cfg.messages_key!r} must end with the assistant's answer after at least "
                f"one other message (it ends with a {msgs[-1]['role']!r} message of {len(msgs)}); add the answer, or give "
                "prompt-only rows in a 'prompt' column"
            )
        out = {k: v for k, v in row.items() if k != cfg.messages_key}
        out[cfg.prompt_key] = msgs[:-1]
        out[columns["response"]] = msgs[-1:]
        return out
    chosen, rejected = row.get(columns["chosen"]), row.get(columns["rejected"])
    c, r = _messages_value(chosen), _messages_value(rejected)
    if c is not None and r is not None:
        n = 0
        while n < min(len(c), len(r)) and c[n] == r[n]:
            n += 1
        if n == 0 or n == len(c) or n == len(r):
            raise DataError(
                f"{where}: no prompt column, and the conversations in {columns['chosen']!r} and {columns['rejected']!r} "
                f"{'share no first message' if n == 0 else 'do not differ after their shared messages'}; give the prompt "
                f"in a {cfg.prompt_key!r} column (data.prompt_key) and the answers in {columns['chosen']!r} / {columns['rejected']!r}"
            )
        out = dict(row)
        out[cfg.prompt_key], out[columns["chosen"]], out[columns["rejected"]] = c[:n], c[n:], r[n:]
        return out
    return row


def _as_turn(value: Any, where: str, column: str) -> list[Message]:
    """An answer of a conversational row: a message list, or a string (one assistant message)."""
    msgs = _messages_value(value)
    if msgs is not None:
        return check_messages(msgs, where, column)
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    raise DataError(f"{where}: column {column!r} must be a list of messages or a string, got {type(value).__name__} {_short(value)}")


def _conversation_fields(row: dict[str, Any], where: str, columns: dict[str, str], prompt: list[Message]) -> dict[str, Any]:
    """The text fields and ``conversation`` of a conversational row (texts unrendered until the
    pipeline applies the model's chat template)."""
    conv = Conversation(prompt=prompt, where=where)
    values: dict[str, Any] = {"prompt": UnrenderedChat(plain_text(prompt), where), "conversation": conv}
    for field_name in ("response", "chosen", "rejected"):
        column = columns[field_name]
        if _present(row, column):
            turn = _as_turn(row[column], where, column)
            setattr(conv, field_name, turn)
            values[field_name] = UnrenderedChat(plain_text(turn), where)
    column = columns["responses"]
    if _present(row, column):
        items = row[column]
        if isinstance(items, str):
            items = _json_list(items)
        if hasattr(items, "tolist"):
            items = items.tolist()
        if not isinstance(items, (list, tuple)) or len(items) < 2:
            raise DataError(
                f"{where}: column {column!r} must be a list of at least 2 answers (each a message list or a string), "
                f"got {_short(row[column])}"
            )
        conv.responses = [_as_turn(x, where, f"{column}[{i}]") for i, x in enumerate(items)]
        values["responses"] = [UnrenderedChat(plain_text(t), where) for t in conv.responses]
    return values


def row_to_record(row: dict[str, Any], where: str, cfg: FileSourceConfig, kind: str, *, why: str = "", opt: str = "data") -> Record:
    """Turn one raw row into a :class:`Record` of ``kind``, checking columns and types.

    Args:
        row: Column name -> value (``None`` is a missing value).
        where: ``"line 3 of data.jsonl"``, for messages.
        cfg: Column mapping.
        kind: The record kind the row must be; its required columns must be present.
        why: Said after a missing column, e.g. ``" (needed by kind 'feedback', inferred from line 1)"``.
        opt: The config node the messages name (``data``, or ``reward`` for a reward's data file).

    Raises:
        DataError: A required column is missing or a value has the wrong type.
    """
    row = _expand_conversation(row, where, cfg)
    columns = _columns(cfg, row)
    mapped = lambda: {c for c in columns.values() if _present(row, c)}  # noqa: E731 - for errors only
    if not _present(row, cfg.prompt_key):
        raise _missing_column(where, "prompt", cfg.prompt_key, row, mapped(), "", opt)
    for field_name in REQUIRED[kind]:
        column = columns[field_name]
        if not _present(row, column):
            raise _missing_column(where, field_name, column, row, mapped(), why, opt)
    prompt_msgs = _messages_value(row[cfg.prompt_key])
    if prompt_msgs is not None:
        values = _conversation_fields(row, where, columns, check_messages(prompt_msgs, where, cfg.prompt_key))
        converters = {k: v for k, v in _CONVERTERS.items() if k not in ("response", "chosen", "rejected", "responses")}
    else:
        values = {"prompt": _as_str(row[cfg.prompt_key], where, cfg.prompt_key)}
        converters = _CONVERTERS
        for field_name in ("response", "chosen", "rejected"):
            column = columns[field_name]
            if _present(row, column) and _messages_value(row[column]) is not None:
                raise DataError(
                    f"{where}: column {column!r} is a list of messages but {cfg.prompt_key!r} is plain text; give the prompt as "
                    "a message list too (conversational rows), or both as text"
                )
    for field_name, convert in converters.items():
        column = columns[field_name]
        if _present(row, column):
            values[field_name] = convert(row[column], where, column)
    used = set(columns.values())
    meta = {k: v for k, v in row.items() if k not in used}
    return Record(**values, meta=meta)


def rows_to_records(
    rows: list[tuple[str, dict[str, Any]]], cfg: FileSourceConfig, *, opt: str = "data", why: Optional[str] = None
) -> list[Record]:
    """Convert rows to records of one kind: ``cfg.kind``, or the first row's kind when it is ``"auto"``.

    ``why`` (said after a missing column) and ``opt`` (the config node named in fixes) let other
    plugins that read data files (the feedback reward) word the messages for their own options.
    """
    if why is not None:
        kind = cfg.kind
    elif cfg.kind == "auto":
        first_where, first = rows[0]
        first = _expand_conversation(first, first_where, cfg)
        kind = infer_kind(first, _columns(cfg, first))
        why = f" (needed by kind {kind!r}, inferred from the columns of {first_where.split(' of ')[0]})"
    else:
        kind, why = cfg.kind, f" (needed by data.kind={cfg.kind})"
    return [row_to_record(row, where, cfg, kind, why=why, opt=opt) for where, row in rows]


# --------------------------------------------------------------------------------------------
# The data source
# --------------------------------------------------------------------------------------------


def validate_config(cfg: FileSourceConfig) -> None:
    """Raise :class:`ConfigError` for inconsistent options, naming the option and the fix."""
    if not cfg.path:
        raise ConfigError("data.path is not set; give the training file, e.g. data.path=data/train.jsonl")
    validate_options(cfg, "data.")
    if cfg.eval_path and cfg.eval_fraction > 0:
        raise ConfigError("data.eval_path and data.eval_fraction are both set; use one: a separate eval file or a held-out fraction")
    if cfg.eval_split and (cfg.eval_path or cfg.eval_fraction > 0):
        raise ConfigError("data.eval_split is set together with data.eval_path / data.eval_fraction; use one way to get eval records")


def split_indices(n: int, eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A deterministic train/eval split of ``range(n)``; both parts keep file order.

    The eval part has ``round(n * eval_fraction)`` items, at least 1 when the fraction is positive,
    drawn with ``random.Random(seed)`` (the same on every platform and Python version).

    Raises:
        DataError: The split would leave no training records.
    """
    if eval_fraction <= 0:
        return list(range(n)), []
    k = max(1, round(n * eval_fraction))
    if k >= n:
        raise DataError(f"data.eval_fraction={eval_fraction} of {n} record(s) leaves no training records; lower it or add data")
    held_out = set(random.Random(seed).sample(range(n), k))
    return [i for i in range(n) if i not in held_out], sorted(held_out)


class FileSource:
    """Records from a JSONL, JSON, CSV/TSV or Parquet file or a saved Hugging Face dataset."""

    def __init__(self, cfg: FileSourceConfig) -> None:
        validate_config(cfg)
        self.cfg = cfg
        self._cache: dict[str, list[Record]] = {}

    def _load(self, path: str, hf_split: str) -> list[Record]:
        rows = read_rows(path, self.cfg.format, limit=self.cfg.limit, hf_split=hf_split)
        return rows_to_records(rows, self.cfg)

    def _splits(self) -> dict[str, list[Record]]:
        if not self._cache:
            cfg = self.cfg
            train = self._load(cfg.path, cfg.split)  # type: ignore[arg-type]
            if cfg.eval_path:
                evals = self._load(cfg.eval_path, "train")
            elif cfg.eval_split:
                evals = self._load(cfg.path, cfg.eval_split)  # type: ignore[arg-type]
            else:
                train_idx, eval_idx = split_indices(len(train), cfg.eval_fraction, cfg.seed)
                train, evals = [train[i] for i in train_idx], [train[i] for i in eval_idx]
            self._cache = {"train": train, "eval": evals}
        return self._cache

    def records(self, split: str) -> list[Record]:
        """The records of ``split`` ("train" or "eval"); files are read on first use and kept.

        Raises:
            DataError: A file is missing, empty or malformed.
        """
        if split not in ("train", "eval"):
            raise InvalidInputError(f"unknown split {split!r}; data sources have 'train' and 'eval'")
        return list(self._splits()[split])


@hookimpl
def register_data_sources(register):
    doc = "Records from a {} (data.path=...; column names via data.*_key)."
    register("file", FileSource, config=FileSourceConfig, description=doc.format("JSONL/JSON/CSV/Parquet file or saved dataset, by extension"))
    register("jsonl", FileSource, config=JsonlConfig, description=doc.format("JSONL file"))
    register("csv", FileSource, config=CsvConfig, description=doc.format("CSV file"))
    register("parquet", FileSource, config=ParquetConfig, description=doc.format("Parquet file"))
    register("hf_disk", FileSource, config=HFDiskConfig, description=doc.format("Hugging Face dataset saved with save_to_disk"))
