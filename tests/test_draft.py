"""`mlcycle init`'s decisions, one test each, on small messy files written here."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
import yaml

from mlcycle.schemas import load_schema_file
from mlcycle.schemas.config import CsvOptions, PipelineConfig
from mlcycle.tasks.ingest.draft import DraftError, config_yaml, draft_dataset, schema_module, summary_lines

TODAY = datetime(2026, 12, 4, tzinfo=UTC)
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def loans_file(folder: Path, rows: int = 400, sep: str = ",") -> Path:
    """A warehouse export as it comes: money and percentages as text, two-digit-year dates, zip codes with leading
    zeros, a numeric code, `?` for missing, a real category spelled `NA`, an id, names, a constant, a leak, a weight."""
    rng = random.Random(7)
    lines = [sep.join(["loan_id", "customer", "amount", "rate", "opened", "zip", "segment", "region", "origin",
                       "country", "charged_off", "survey_weight", "default"])]  # fmt: skip
    for i in range(rows):
        segment = rng.choice([1, 2, 3])
        amount = rng.randint(1_000, 250_000)
        default = rng.random() < (0.15 + 0.25 * (segment == 3) + 0.2 * (amount > 150_000))
        year = rng.choice([95, 97, 99, 1, 3, 5])
        opened = f"{rng.randint(1, 28)}-{rng.choice(MONTHS)}-{year:02d}"
        region = "?" if i % 17 == 0 else rng.choice(["north", "south", "east", "west"])
        origin = rng.choice(["NA", "EU", "AS"])  # NA: North America, a category
        charged = f'"${rng.randint(100, amount):,}.00 "' if default else '"$0.00 "'
        values = [str(1_000_000 + i), f'"Customer {i:04d} LLC"', f'"${amount:,}.{rng.randint(0, 99):02d} "',
                  f"{rng.uniform(2, 19):.1f}%", opened, f"{rng.choice([2134, 2139, 10001, 94105, 60601]):05d}",
                  str(segment), region, origin, "US", charged, f"{rng.uniform(0.5, 3):.3f}",
                  "yes" if default else "no"]  # fmt: skip
        lines.append(sep.join(values))
    path = folder / "loans.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def loans(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("loans")
    return draft_dataset(loans_file(folder), "default", name="loans", weight="survey_weight", today=TODAY)


def import_file(path: Path, source: str) -> ModuleType:
    """A drafted schema module, written and loaded as the training flow loads a project's schema file."""
    path.write_text(source)
    return load_schema_file(path)


def column(draft, name: str):  # type: ignore[no-untyped-def]
    return next(c for c in draft.columns if c.name == name)


def test_the_target_decides_the_task_and_the_rarer_class_is_positive(loans) -> None:  # type: ignore[no-untyped-def]
    assert loans.task == "binary"
    assert loans.positive == "yes"
    assert loans.classes == ["no", "yes"]


def test_money_is_parsed_by_a_declared_rule(loans) -> None:  # type: ignore[no-untyped-def]
    amount = column(loans, "amount")
    assert amount.role == "feature" and amount.kind == "number"
    assert amount.rule is not None and amount.rule.currency == "$" and amount.rule.thousands == ","
    assert amount.nonnegative


def test_percentages_are_parsed(loans) -> None:  # type: ignore[no-untyped-def]
    rate = column(loans, "rate")
    assert rate.rule is not None and rate.rule.kind == "percent"


def test_dates_get_a_format_a_century_pivot_and_derived_features(loans) -> None:  # type: ignore[no-untyped-def]
    opened = column(loans, "opened")
    assert opened.is_date and opened.rule is not None
    assert opened.rule.format == "%d-%b-%y" and opened.rule.century_pivot == 26
    assert {d["kind"] for d in loans.derived if d["source"] == "opened"} == {"days", "month", "dayofweek"}
    assert "derived" in (opened.drop_reason or "")  # the raw text is never a feature itself


def test_codes_that_look_numeric_are_categories(loans) -> None:  # type: ignore[no-untyped-def]
    assert column(loans, "zip").kind == "code"  # by its name
    assert column(loans, "segment").kind == "code"  # three values


def test_question_marks_are_missing_but_a_category_spelled_na_is_not(loans) -> None:  # type: ignore[no-untyped-def]
    region, origin = column(loans, "region"), column(loans, "origin")
    assert region.missing_tokens == ["?"] and region.nullable
    assert origin.missing_tokens == [] and origin.kept_tokens == ["NA"] and not origin.nullable


def test_ids_names_and_constants_are_excluded_with_reasons(loans) -> None:  # type: ignore[no-untyped-def]
    assert column(loans, "loan_id").role == "id"
    customer, country = column(loans, "customer"), column(loans, "country")
    assert customer.role == "dropped" and "free text" in (customer.drop_reason or "")
    assert country.role == "dropped" and "constant" in (country.drop_reason or "")


def test_a_leaking_column_is_dropped_by_the_scan(loans) -> None:  # type: ignore[no-untyped-def]
    charged = column(loans, "charged_off")
    assert charged.role == "dropped" and "leak" in (charged.drop_reason or "")


def test_the_weight_is_never_a_feature(loans) -> None:  # type: ignore[no-untyped-def]
    assert column(loans, "survey_weight").role == "weight"
    source = schema_module(loans)
    features = source.split("class LoansSchema")[0]
    assert "survey_weight" not in features and "survey_weight" in source


def test_the_written_config_and_schema_load(loans, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    raw = yaml.safe_load(config_yaml(loans, "schemas/loans.py"))
    config = PipelineConfig.model_validate(raw)
    assert config.drop["customer"].startswith("free text")
    assert config.source.parse["amount"].kind == "number"
    assert config.source.csv.na_values == ["?"]
    assert config.preprocess.categorical == ["zip", "segment"]
    assert config.split.strategy == "stratified"
    module = import_file(tmp_path / "loans_schema.py", schema_module(loans))
    features = module.LoansFeatures.to_schema().columns
    assert "default" not in features and "charged_off" not in features and "amount" in features
    assert str(features["zip"].dtype).startswith("str")  # read as text: 02134 keeps its zero


def test_ranges_are_never_the_samples_exact_min_and_max(loans) -> None:  # type: ignore[no-untyped-def]
    source = schema_module(loans)
    assert re.search(r"\ble=", source) is None
    assert "amount: Series[float] = pa.Field(ge=0)" in source


def test_the_summary_says_what_was_decided_for_every_column(loans) -> None:  # type: ignore[no-untyped-def]
    text = "\n".join(summary_lines(loans))
    for name in ("loan_id", "customer", "charged_off", "country", "zip", "survey_weight"):
        assert name in text
    assert "dropped: likely target leak" in text
    assert "tuning for 400 rows: optuna search, 60 s budget" in text


def test_three_classes_make_a_multiclass_task(tmp_path: Path) -> None:
    rng = random.Random(1)
    rows = [f"{x:.2f},{y:.2f},{'ABC'[int(x + y) % 3]}" for x, y in ((rng.uniform(0, 9), rng.uniform(0, 9))
                                                                  for _ in range(300))]  # fmt: skip
    path = tmp_path / "tiers.csv"
    path.write_text("x,y,tier\n" + "\n".join(rows) + "\n")
    draft = draft_dataset(path, "tier", today=TODAY)
    assert draft.task == "multiclass" and draft.classes == ["A", "B", "C"]
    assert draft.split["strategy"] == "stratified"


def test_a_headerless_file_with_a_two_character_separator(tmp_path: Path) -> None:
    path = tmp_path / "adult.data"
    rng = random.Random(3)
    path.write_text("".join(f"{rng.randint(17, 90)}, {rng.choice(['Private', '?', 'State-gov'])}, "
                            f"{rng.choice(['<=50K', '>50K'])}\n" for _ in range(200)))  # fmt: skip
    csv = CsvOptions(header=False, names=["age", "workclass", "income"], sep=", ")
    draft = draft_dataset(path, "income", csv=csv, today=TODAY)
    assert [c.name for c in draft.columns] == ["age", "workclass", "income"]
    assert column(draft, "workclass").missing_tokens == ["?"]
    assert column(draft, "age").kind == "integer"
    assert (
        PipelineConfig.model_validate(yaml.safe_load(config_yaml(draft, "schemas/adult_data.py"))).source.csv.sep
        == ", "
    )


def test_a_time_column_makes_a_time_split(tmp_path: Path) -> None:
    rows = [f"2024-01-{d:02d},{d * 1.5:.1f},{d % 7}" for d in range(1, 29)] * 5
    path = tmp_path / "daily.csv"
    path.write_text("day,temp,sales\n" + "\n".join(rows) + "\n")
    draft = draft_dataset(path, "sales", task="regression", time_column="day", today=TODAY)
    assert draft.split == {"strategy": "time", "time_columns": ["day"], "valid_size": 0.15, "test_size": 0.15}


def test_bad_options_name_the_problem(tmp_path: Path) -> None:
    path = loans_file(tmp_path, rows=50)
    with pytest.raises(DraftError, match="--target 'nope' is not a column"):
        draft_dataset(path, "nope", today=TODAY)
    with pytest.raises(DraftError, match="--positive 'maybe' is not a value"):
        draft_dataset(path, "default", positive="maybe", today=TODAY)
    with pytest.raises(DraftError, match="no such file"):
        draft_dataset(tmp_path / "gone.csv", "default", today=TODAY)


def _init(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from mlcycle.flows.cli import main; main()", "init", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120)  # fmt: skip


def test_init_refuses_a_users_mistake_with_one_line_and_exit_2(tmp_path: Path) -> None:
    path = loans_file(tmp_path, rows=50)
    for args, message in (
        ([str(path), "--target", "nope"], "--target 'nope' is not a column"),
        ([str(tmp_path / "gone.csv"), "--target", "x"], "no such file"),
        ([str(path), "--target", "default", "--task", "ranking"], "--task must be binary, multiclass or regression"),
    ):
        proc = _init(*args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout


def test_a_headerless_file_without_names_explains_itself(tmp_path: Path) -> None:
    path = tmp_path / "nohead.csv"
    path.write_text("1,a,x\n1,a,y\n2,b,x\n" * 10)
    proc = _init(str(path), "--target", "c3", cwd=tmp_path)
    assert proc.returncode == 2
    assert "--no-header" in proc.stderr and "Traceback" not in proc.stderr
    frame = pd.read_csv(path, header=None)
    assert len(frame.columns) == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"a,b\n1,2\n\x00\x01\x02", "binary data, not delimited text"),
        (b"name,score\ncaf\xe9,1\n", "cannot be read as CSV"),
        (b"a,b,c\n1,2,3\n4,5,6,7\n", "cannot be read as CSV"),
        (b"a;b;c\n1;2;3\n", "only one column"),
    ],
    ids=["empty", "binary", "latin-1", "ragged", "wrong-separator"],
)
def test_unreadable_files_name_the_file_and_the_problem(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(DraftError, match=message) as caught:
        draft_dataset(path, "a", today=TODAY)
    assert str(path) in str(caught.value)


def test_a_large_file_is_read_in_part_and_counted_in_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlcycle.tasks.ingest.draft as draft

    path = loans_file(tmp_path, rows=400)
    monkeypatch.setattr(draft, "READ_BYTES", 20_000)
    frame, rows = draft.read_sample(path, CsvOptions(), max_rows=1000, seed=0)
    assert rows == 400 and 50 < len(frame) < 400
    assert frame.iloc[-1].notna().sum() >= 10  # the last line read is whole, not cut mid-way
