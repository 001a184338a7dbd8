"""Tests of the file data sources: every format, every record kind, the split, and every bad input."""

from __future__ import annotations

import csv
import gzip
import inspect
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from alignfw.exceptions import ConfigError, DataError, InvalidInputError
from alignfw.plugins.data import sources
from alignfw.plugins.data.sources import (
    CsvConfig,
    FileSource,
    FileSourceConfig,
    HFDiskConfig,
    JsonlConfig,
    ParquetConfig,
    split_indices,
)
from alignfw.registry import Register, Registry
from alignfw.types import Record

# one row of each record kind, and the Record it must become
KIND_ROWS = {
    "prompt": ({"prompt": "p", "topic": "t"}, Record("p", meta={"topic": "t"})),
    "sft": ({"prompt": "p", "response": "r"}, Record("p", response="r")),
    "ranked": ({"prompt": "p", "responses": ["best", "worse", "worst"]}, Record("p", responses=["best", "worse", "worst"])),
    "preference": ({"prompt": "p", "chosen": "c", "rejected": "r"}, Record("p", chosen="c", rejected="r")),
    "feedback": ({"prompt": "p", "response": "r", "feedback": -1}, Record("p", response="r", feedback=-1)),
    "score": ({"prompt": "p", "response": "r", "score": 0.25}, Record("p", response="r", score=0.25)),
    "reference": ({"prompt": "p", "references": ["a", "b"]}, Record("p", references=["a", "b"])),
}


def write_jsonl(path: Path, rows: list, *, raw_lines: list[str] | None = None) -> Path:
    lines = [json.dumps(r) for r in rows] + (raw_lines or [])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_csv(path: Path, header: list[str], rows: list[list[str]], delimiter: str = ",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def load(path: Path, split: str = "train", **options) -> list[Record]:
    return FileSource(FileSourceConfig(path=str(path), **options)).records(split)


def data_error(path: Path, **options) -> str:
    with pytest.raises(DataError) as e:
        load(path, **options)
    return str(e.value)


# ---- good files ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KIND_ROWS))
def test_jsonl_every_kind(tmp_path, kind):
    row, expected = KIND_ROWS[kind]
    records = load(write_jsonl(tmp_path / "d.jsonl", [row, row]))
    assert records == [expected, expected]
    assert records[0].kind == kind


def test_reference_column_as_single_string_and_as_reference(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "reference": "only one"}])
    assert load(path)[0].references == ["only one"]
    path = write_jsonl(tmp_path / "e.jsonl", [{"prompt": "p", "target": ["x", "y"]}])
    assert load(path, reference_key="target")[0].references == ["x", "y"]


def test_column_mapping_and_meta(tmp_path):
    rows = [{"question": "q1", "answer": "a1", "source": "wiki", "id": 7}]
    records = load(write_jsonl(tmp_path / "d.jsonl", rows), prompt_key="question", response_key="answer")
    assert records == [Record("q1", response="a1", meta={"source": "wiki", "id": 7})]


def test_blank_lines_are_skipped_and_line_numbers_stay_true(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a"}\n\n   \n{"prompt": "b"}\n{"prompt": 3}\n', encoding="utf-8")
    assert "line 5 of d.jsonl" in data_error(path)
    assert [r.prompt for r in load(path, limit=2)] == ["a", "b"]


def test_csv_every_kind(tmp_path):
    header = ["prompt", "response", "feedback", "score", "extra"]
    path = write_csv(tmp_path / "d.csv", header, [["p1", "r1", "+1", "", "x"], ["p2", "r2", "-1", "", ""]])
    assert load(path) == [
        Record("p1", response="r1", feedback=1, meta={"extra": "x"}),
        Record("p2", response="r2", feedback=-1, meta={"extra": None}),
    ]
    path = write_csv(tmp_path / "s.csv", ["prompt", "response", "score"], [["p", "r", "0.5"], ["q", "s", "-2"]])
    assert [r.score for r in load(path)] == [0.5, -2.0]
    path = write_csv(tmp_path / "r.csv", ["prompt", "responses"], [["p", json.dumps(["a, b", "c"])]])
    assert load(path)[0].responses == ["a, b", "c"]
    path = write_csv(tmp_path / "ref.csv", ["prompt", "reference"], [["p", "one ref"], ["q", '["two", "refs"]'], ["r", "[not json"]])
    assert [r.references for r in load(path)] == [["one ref"], ["two", "refs"], ["[not json"]]
    path = write_csv(tmp_path / "pref.csv", ["prompt", "chosen", "rejected"], [["p", "good", "bad"]])
    assert load(path) == [Record("p", chosen="good", rejected="bad")]
    path = write_csv(tmp_path / "fb.csv", ["prompt", "response", "feedback"], [["p", "r", "true"], ["q", "r", "False"]])
    assert [r.feedback for r in load(path)] == [1, -1]


def test_tsv_json_and_gzip(tmp_path):
    path = write_csv(tmp_path / "d.tsv", ["prompt", "response"], [["a,b", "c"]], delimiter="\t")
    assert load(path) == [Record("a,b", response="c")]
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"prompt": "x"}, {"prompt": "y"}]), encoding="utf-8")
    assert [r.prompt for r in load(path)] == ["x", "y"]
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write('{"prompt": "zipped", "chosen": "a", "rejected": "b"}\n')
    assert load(path) == [Record("zipped", chosen="a", rejected="b")]


def test_explicit_format_ignores_the_extension(tmp_path):
    path = write_jsonl(tmp_path / "data.txt", [{"prompt": "p"}])
    assert FileSource(JsonlConfig(path=str(path))).records("train") == [Record("p")]
    with pytest.raises(ConfigError, match="cannot tell the format of .*data.txt.*set data.format"):
        load(path)


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"prompt": ["p1", "p2"], "responses": [["a", "b"], ["c", "d", "e"]], "score": [1.5, None]})
    pq.write_table(table, tmp_path / "d.parquet")
    records = FileSource(ParquetConfig(path=str(tmp_path / "d.parquet"))).records("train")
    assert records == [Record("p1", responses=["a", "b"], score=1.5), Record("p2", responses=["c", "d", "e"])]
    assert load(tmp_path / "d.parquet") == records  # by extension


def test_parquet_corrupt_file(tmp_path):
    pytest.importorskip("pyarrow")
    (tmp_path / "bad.parquet").write_bytes(b"this is not parquet")
    assert "bad.parquet: cannot read it as Parquet" in data_error(tmp_path / "bad.parquet")


def test_hf_disk_dataset_and_dataset_dict(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list([{"prompt": f"p{i}", "chosen": "c", "rejected": "r"} for i in range(5)])
    ds.save_to_disk(str(tmp_path / "single"))
    records = FileSource(HFDiskConfig(path=str(tmp_path / "single"))).records("train")
    assert [r.prompt for r in records] == [f"p{i}" for i in range(5)] and records[0].kind == "preference"
    assert len(load(tmp_path / "single", eval_fraction=0.4)) == 3  # a directory is picked up by data=file too

    dd = datasets.DatasetDict({"train": ds, "test": datasets.Dataset.from_list([{"prompt": "held out"}])})
    dd.save_to_disk(str(tmp_path / "dict"))
    source = FileSource(HFDiskConfig(path=str(tmp_path / "dict"), eval_split="test"))
    assert len(source.records("train")) == 5 and source.records("eval") == [Record("held out")]
    with pytest.raises(DataError, match=r"no split 'validation' \(splits: train, test\)"):
        FileSource(HFDiskConfig(path=str(tmp_path / "dict"), split="validation")).records("train")


def test_hf_disk_needs_a_directory(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p"}])
    with pytest.raises(DataError, match="is a file; data=hf_disk needs the directory written by Dataset.save_to_disk"):
        FileSource(HFDiskConfig(path=str(path))).records("train")


# ---- splits ---------------------------------------------------------------------------------


def test_eval_path(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "t"}])
    evals = write_csv(tmp_path / "eval.csv", ["prompt", "reference"], [["e", "ref"]])
    source = FileSource(FileSourceConfig(path=str(train), eval_path=str(evals)))
    assert source.records("train") == [Record("t")]
    assert source.records("eval") == [Record("e", references=["ref"])]


def test_no_eval_configured_gives_empty_eval(tmp_path):
    assert load(write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p"}]), split="eval") == []


def test_eval_fraction_is_deterministic_disjoint_and_ordered(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"p{i}"} for i in range(100)])
    train, evals = load(path, eval_fraction=0.2, seed=3), load(path, "eval", eval_fraction=0.2, seed=3)
    assert len(train) == 80 and len(evals) == 20
    names = [r.prompt for r in train + evals]
    assert sorted(names) == sorted(f"p{i}" for i in range(100))
    assert [r.prompt for r in evals] == sorted((r.prompt for r in evals), key=lambda p: int(p[1:]))  # file order
    assert load(path, "eval", eval_fraction=0.2, seed=3) == evals
    assert load(path, "eval", eval_fraction=0.2, seed=4) != evals


def test_split_indices_small_fractions_and_errors():
    assert split_indices(10, 0.0, 0) == (list(range(10)), [])
    train, evals = split_indices(10, 0.01, 0)
    assert len(evals) == 1 and len(train) == 9
    with pytest.raises(DataError, match="eval_fraction=0.5 of 1 record.s. leaves no training records"):
        split_indices(1, 0.5, 0)


def test_limit_applies_before_the_split(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"p{i}"} for i in range(50)], raw_lines=["{broken"])
    assert len(load(path, limit=10)) == 10  # the broken line 51 is never read
    assert len(load(path, limit=10, eval_fraction=0.3)) == 7


def test_records_returns_a_fresh_list(tmp_path):
    source = FileSource(FileSourceConfig(path=str(write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p"}]))))
    source.records("train").clear()
    assert len(source.records("train")) == 1
    with pytest.raises(InvalidInputError, match="unknown split 'test'"):
        source.records("test")


# ---- bad inputs: each message names the file, the place, the problem and the fix -----------


def test_missing_path(tmp_path):
    msg = data_error(tmp_path / "nope.jsonl")
    assert "data file" in msg and "nope.jsonl" in msg and "does not exist" in msg and "data.path" in msg


def test_directory_given_as_a_file(tmp_path):
    msg = str(pytest.raises(DataError, FileSource(JsonlConfig(path=str(tmp_path))).records, "train").value)
    assert "is a directory, not a jsonl file" in msg


@pytest.mark.parametrize(("name", "content"), [("e.jsonl", ""), ("w.jsonl", "\n  \n"), ("h.csv", "prompt,response\n"), ("a.json", "[]")])
def test_empty_files(tmp_path, name, content):
    (tmp_path / name).write_text(content, encoding="utf-8")
    msg = data_error(tmp_path / name)
    assert name in msg and "holds no records" in msg and "empty" in msg


def test_malformed_json_line(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [{"prompt": "a"}, {"prompt": "b"}], raw_lines=['{"prompt": "c",'])
    msg = data_error(path)
    assert msg.startswith("line 3 of data.jsonl: not valid JSON") and "one complete JSON object" in msg


def test_json_line_that_is_not_an_object(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [{"prompt": "a"}, ["prompt", "b"]])
    assert "line 2 of data.jsonl: expected a JSON object" in data_error(path)
    path = tmp_path / "d.json"
    path.write_text('{"prompt": "x"}', encoding="utf-8")
    assert "must hold a list of objects" in data_error(path)


def test_missing_prompt_column_suggests_the_key(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [{"prompt": "a"}, {"prompt": "b"}, {"question": "q", "answer": "x"}])
    assert data_error(path) == "line 3 of data.jsonl: missing column 'prompt' (columns present: question, answer); set data.prompt_key=question"
    path = write_jsonl(tmp_path / "other.jsonl", [{"text_in": "a"}])
    assert "set data.prompt_key=<column>" in data_error(path)


def test_row_missing_a_column_of_the_inferred_kind(tmp_path):
    rows = [{"prompt": "a", "response": "r", "feedback": 1}] * 3 + [{"prompt": "b", "response": "r"}]
    msg = data_error(write_jsonl(tmp_path / "fb.jsonl", rows))
    assert msg.startswith("line 4 of fb.jsonl: missing column 'feedback' (needed by kind 'feedback', inferred from the columns of line 1)")
    assert "set data.feedback_key=" in msg and "data.kind" in msg


def test_explicit_kind_requires_its_columns(tmp_path):
    path = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": "a", "response": "r", "better": "x"}])
    msg = data_error(path, kind="preference")
    assert "line 1 of sft.jsonl: missing column 'chosen' (needed by data.kind=preference)" in msg
    assert "set data.chosen_key=better" in msg
    assert load(path, kind="sft") == [Record("a", response="r", meta={"better": "x"})]


def test_missing_references_names_reference_key(tmp_path):
    msg = data_error(write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "target": "t"}]), kind="reference")
    assert "missing column 'references'" in msg and "set data.reference_key=target" in msg


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"prompt": 3}, "line 1 of d.jsonl: column 'prompt' must be a string, got int 3"),
        ({"prompt": "p", "response": ["r"]}, "column 'response' must be a string, got list ['r']"),
        ({"prompt": "p", "response": "r", "feedback": 0}, "column 'feedback' is feedback and must be +1 (good) or -1 (bad), as in MOSS-RLHF; got 0"),
        ({"prompt": "p", "response": "r", "feedback": "yes"}, "must be +1 (good) or -1 (bad)"),
        ({"prompt": "p", "response": "r", "score": "high"}, "column 'score' must be a number, got str 'high'"),
        ({"prompt": "p", "response": "r", "score": True}, "column 'score' must be a number, got bool True"),
        ({"prompt": "p", "responses": ["only one"]}, "column 'responses' needs at least 2 item(s), got 1"),
        ({"prompt": "p", "responses": "a, b"}, "column 'responses' must be a list of strings"),
        ({"prompt": "p", "responses": "[broken"}, "column 'responses' must be a list of strings (JSON-encoded in CSV: [\"a\", \"b\"]), got str '[broken'"),
        ({"prompt": "p", "responses": {"a": 1}}, "column 'responses' must be a list of strings"),
        ({"prompt": "p", "references": ["a", 2]}, "column 'references' must be a string or a list of strings"),
        ({"prompt": "p", "references": []}, "column 'references' needs at least 1 item(s), got 0"),
    ],
)
def test_wrong_types(tmp_path, row, expected):
    assert expected in data_error(write_jsonl(tmp_path / "d.jsonl", [row]))


def test_non_finite_score(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "p", "response": "r", "score": NaN}\n', encoding="utf-8")
    assert "line 1 of d.jsonl: column 'score' must be a finite number" in data_error(path)


def test_csv_ragged_rows_and_duplicate_header(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("prompt,response\na,b\nc,d,e\n", encoding="utf-8")
    assert "line 3 of d.csv: 3 cells but the header names 2 columns" in data_error(path)
    path.write_text("prompt,response\na\n", encoding="utf-8")
    assert "line 2 of d.csv: 1 cells but the header names 2 columns" in data_error(path)
    path.write_text("prompt,prompt\na,b\n", encoding="utf-8")
    assert "line 1 of d.csv: duplicate column name(s) prompt" in data_error(path)


def test_not_utf8(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"prompt": "caf\xe9"}\n')
    assert "d.jsonl: not UTF-8 text" in data_error(path)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(path=None), "data.path is not set"),
        (dict(eval_fraction=1.0), "data.eval_fraction=1.0 is out of range: must be >= 0 and < 1"),
        (dict(eval_fraction=0.1, eval_path="e.jsonl"), "data.eval_path and data.eval_fraction are both set"),
        (dict(kind="pairs"), "data.kind='pairs' is not a valid choice: must be one of 'auto', 'prompt', 'sft'"),
        (dict(format="xlsx"), "data.format='xlsx'"),
        (dict(limit=0), "data.limit=0 is out of range: must be >= 1"),
    ],
)
def test_config_errors(options, message):
    cfg = FileSourceConfig(**{"path": "x.jsonl", **options})
    with pytest.raises(ConfigError) as e:
        FileSource(cfg)
    assert message in str(e.value)


# ---- registration and Hydra ----------------------------------------------------------------


def test_hook_registers_every_source():
    registry = Registry()
    sources.register_data_sources(Register(registry, "data", "sources", "test"))
    assert registry.names("data") == ["csv", "file", "hf_disk", "jsonl", "parquet"]
    for name, cfg_cls in [("file", FileSourceConfig), ("jsonl", JsonlConfig), ("csv", CsvConfig), ("parquet", ParquetConfig), ("hf_disk", HFDiskConfig)]:
        reg = registry.get("data", name)
        assert reg.factory is FileSource and reg.config is cfg_cls and reg.description


@pytest.mark.parametrize("cfg_cls", [FileSourceConfig, JsonlConfig, CsvConfig, ParquetConfig, HFDiskConfig])
def test_configs_are_hydra_structured_configs(tmp_path, cfg_cls):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "q"}])
    cfg = OmegaConf.merge(OmegaConf.structured(cfg_cls), OmegaConf.from_dotlist([f"path={path}", "prompt_key=question", "limit=5"]))
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, cfg_cls) and obj.limit == 5
    with pytest.raises(Exception, match="prompt_kye"):
        OmegaConf.merge(cfg, OmegaConf.from_dotlist(["prompt_kye=x"]))
    if cfg_cls in (FileSourceConfig, JsonlConfig):
        assert FileSource(obj).records("train") == [Record("q")]


def test_never_unpickles():
    source = inspect.getsource(sources)
    assert "import pickle" not in source and "pickle.load" not in source and "read_pickle" not in source


def test_data_source_from_the_command_line(compose_typed, builtin_plugins, tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": f"q{i}", "answer": "a"} for i in range(10)])
    cfg = compose_typed("data=jsonl", f"data.path={path}", "data.prompt_key=question", "data.response_key=answer", "data.eval_fraction=0.2")
    source = builtin_plugins.get("data", "jsonl").build(cfg.data)
    assert len(source.records("train")) == 8 and source.records("eval")[0].kind == "sft"
    with pytest.raises(Exception, match="eval_fractoin"):
        compose_typed("data=jsonl", f"data.path={path}", "data.eval_fractoin=0.2")
