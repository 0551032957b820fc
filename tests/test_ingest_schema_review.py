"""Schema review: `schema diff` names what changed with counts and examples; `schema infer` drafts a schema that
accepts the data it was drafted from."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pandera.pandas as pa
from typer.testing import CliRunner

from mlcycle.flows.cli import app
from mlcycle.tasks.ingest.draft import draft_dataset, schema_module
from mlcycle.tasks.ingest.schema_review import ColumnChange, diff_frame
from mlcycle.tasks.ingest.store import DatasetStore
from mlcycle.tasks.ingest.validate import validate_frame
from tests.ingest_fixtures import HEADER, TinySchema, admit_file, tiny_config


def test_diff_names_every_kind_of_change_with_counts_and_examples() -> None:
    frame = pd.DataFrame({
        "id": ["1", "x", "3", "-2"],
        "color": ["red", "pink", "pink", "teal"],
        "extra": [1, 2, None, 4],
    })  # fmt: skip
    changes = {(c.column, c.change): c for c in diff_frame(frame, TinySchema).changes}
    assert changes[("extra", "new column")] == ColumnChange("extra", "new column", 3, ["1", "2", "4"])
    assert changes[("score", "missing column")].rows == 4
    assert changes[("id", "values not int64")] == ColumnChange("id", "values not int64", 1, ["x"])
    assert changes[("id", "out of range [1, ]")] == ColumnChange("id", "out of range [1, ]", 1, ["-2", "-2"])
    assert changes[("color", "new categories")] == ColumnChange("color", "new categories", 3, ["pink ×2", "teal ×1"])


def test_diff_tells_a_type_change_of_the_whole_column_and_renders_markdown() -> None:
    frame = pd.DataFrame({"id": ["a", "b"], "color": ["red", None], "score": [1.0, 2.0]})
    diff = diff_frame(frame, TinySchema)
    kinds = {(c.column, c.change) for c in diff.changes}
    assert kinds == {("id", "type change: text where int64 expected"), ("color", "missing values")}
    markdown = diff.to_markdown("Schema diff: a.csv")
    assert "| id | type change: text where int64 expected | 2 | `a`, `b` |" in markdown
    assert diff_frame(frame.assign(id=[1, 2], color=["red", "blue"]), TinySchema).changes == []


def test_a_rejected_batch_carries_its_schema_diff(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(HEADER + "1,pink,1\n2,pink,2\n3,red,3\n")
    result = admit_file(tmp_path / "a.csv", DatasetStore(tmp_path / "store"))
    assert result.outcome == "rejected" and result.schema_diff is not None
    assert "| color | new categories | 2 | `pink ×2` |" in result.schema_diff


def test_inferred_schema_accepts_its_own_data_and_refuses_the_unseen(tmp_path: Path) -> None:
    frame = pd.DataFrame({
        "loan id": [10, 11, 12, 13, 14, 15],
        "state": ["IN", "OK", "IN", "IN", "OK", None],
        "amount": [1.5, 2.25, 3.0, 4.0, 5.0, 6.5],
        "jobs": [1.0, None, 3.0, 4.0, 5.0, 6.0],
        "class": ["a", "b", "c", "d", "e", "f"],
    })  # fmt: skip
    data = tmp_path / "sba-loans.csv"
    frame.to_csv(data, index=False)
    source = schema_module(draft_dataset(data, None, name="sba-loans"))
    module_path = tmp_path / "sba_draft.py"
    module_path.write_text(source)
    spec = importlib.util.spec_from_file_location("sba_draft", module_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["sba_draft"] = module
    try:
        spec.loader.exec_module(module)
        schema: type[pa.DataFrameModel] = module.SbaLoansSchema
        columns = schema.to_schema().columns
        assert set(columns) == set(frame.columns)
        assert columns["state"].nullable and not columns["amount"].nullable
        assert validate_frame(frame, schema).quarantine.empty
        # next month's new state and larger amount are not quarantined: no sample min/max, no closed category list
        unseen = frame.assign(state=["TX", *frame["state"].tolist()[1:]], amount=[99.0, *frame["amount"].tolist()[1:]])
        assert validate_frame(unseen, schema).quarantine.empty
        negative = frame.assign(amount=[-1.0, *frame["amount"].tolist()[1:]])
        assert sorted(set(validate_frame(negative, schema).quarantine["column"])) == ["amount"]  # ge=0 holds
    finally:
        del sys.modules["sba_draft"]
    assert 'class_: Series[str] = pa.Field(alias="class")' in source  # a keyword becomes a safe attribute


def test_cli_schema_infer_and_diff(tmp_path: Path) -> None:
    (tmp_path / "new.csv").write_text("a,b\n1,x\n2,y\n3,x\n4,x\n")
    runner = CliRunner()
    inferred = runner.invoke(app, ["schema", "infer", str(tmp_path / "new.csv"), "--name", "demo"])
    assert inferred.exit_code == 0, inferred.output
    assert "class DemoFeatures(pa.DataFrameModel):" in inferred.stdout
    assert "class DemoSchema(DemoFeatures):" in inferred.stdout
    assert "a: Series[int] = pa.Field(ge=0)" in inferred.stdout
    assert "b: Series[str] = pa.Field()" in inferred.stdout
    (tmp_path / "adult.data").write_text("39, ?, <=50K\n50, Private, >50K\n")
    headerless = runner.invoke(app, ["schema", "infer", str(tmp_path / "adult.data"), "--name", "adult", "--sep",
                                     ", ", "--names", "age,workclass,income", "--target", "income"])  # fmt: skip
    assert headerless.exit_code == 0, headerless.output
    assert "workclass: Series[str] = pa.Field(nullable=True)" in headerless.stdout  # `?` is missing, not a value

    import yaml

    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(tiny_config().model_dump(mode="json")))
    (tmp_path / "batch.csv").write_text(HEADER + "1,pink,1\n")
    diff = runner.invoke(app, ["schema", "diff", "--config", str(config_file), str(tmp_path / "batch.csv")])
    assert diff.exit_code == 0, diff.output
    assert "| color | new categories | 1 | `pink ×1` |" in diff.stdout


def test_diff_counts_rows_the_reader_refused(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(HEADER + "1,red\n2,pink,2\n")
    result = admit_file(tmp_path / "a.csv", DatasetStore(tmp_path / "store"))
    assert result.outcome == "rejected" and result.schema_diff is not None
    assert "2 rows against schema TinySchema" in result.schema_diff
    assert "| <row> | wrong number of fields | 1 | `row 2: 2 fields: 1,red` |" in result.schema_diff
