"""Reading rules a config declares: parse rules (money, percent, dates), missing tokens, separators of any length
and text columns. Every row ends up accepted or in the ledger with the rule that refused it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from mlcycle.schemas.config import ParseRule, PipelineConfig
from mlcycle.tasks.ingest.admit import admit_batch
from mlcycle.tasks.ingest.read import FileInput, apply_parse_rules
from mlcycle.tasks.ingest.store import DatasetStore
from tests.ingest_fixtures import assert_accounted, curated_rows, reasons


class LoanSchema(pa.DataFrameModel):
    zip: Series[str] = pa.Field()
    amount: Series[float] = pa.Field(ge=0)
    rate: Series[float] = pa.Field(nullable=True)
    opened: Series[str] = pa.Field(str_matches=r"^\d{4}-\d{2}-\d{2}$", nullable=True)
    origin: Series[str] = pa.Field(nullable=True)
    status: Series[str] = pa.Field(isin=["paid", "default"])

    class Config:
        strict = True
        coerce = True


RULES = {
    "amount": {"kind": "number", "currency": "$", "thousands": ","},
    "rate": {"kind": "percent", "thousands": ""},
    "opened": {"kind": "date", "format": "%d-%b-%y", "century_pivot": 26},
}


def loan_config(**csv: object) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "name": "loans", "schema_ref": "tests.test_ingest_rules:LoanSchema",
        "features_schema_ref": "tests.test_ingest_rules:LoanSchema", "target": "status", "task": "binary",
        "positive_label": "default", "source": {"files": [{"path": "unused.csv"}], "parse": RULES, "csv": csv},
        "ingest": {"max_quarantine_rate": 0.9},
    })  # fmt: skip


def admit(path: Path, store: DatasetStore, config: PipelineConfig):  # type: ignore[no-untyped-def]
    return admit_batch(FileInput(str(path)), config, store, LoanSchema)


def test_money_percentages_and_dates_are_read_by_their_rules(tmp_path: Path, store: DatasetStore) -> None:
    path = tmp_path / "loans.csv"
    path.write_text(
        "zip,amount,rate,opened,origin,status\n"
        '02134,"$60,000.00 ",12.5%,28-Feb-97,NA,paid\n'  # line 2
        '10001,"($1,500.25)",7%,1-Jan-05,EU,default\n'  # line 3: accounting negative, refused by ge=0
        "94105,$75.5,?,3-Mar-26,,paid\n"  # line 4: `?` not declared missing: the percent rule refuses it
        '60601,"$12x",1%,5-May-99,AS,paid\n'  # line 5: not money
        "02139,$10,2%,31-Feb-99,AS,paid\n"  # line 6: no such date
    )
    result = admit(path, store, loan_config())
    assert_accounted(store, result)
    rows = curated_rows(store, result.record.batch_id).set_index("_row")
    assert list(rows.index) == [2]
    first = rows.loc[2]
    assert first["zip"] == "02134"  # a text column keeps its leading zero
    assert first["amount"] == 60_000.0 and first["rate"] == 12.5 and first["opened"] == "1997-02-28"
    assert first["origin"] == "NA"  # only declared tokens are missing: a category spelled NA stays one
    found = reasons(store, result)
    assert found[3] == ["amount: greater_than_or_equal_to(0) (-1500.25)"]
    assert found[4] == ["rate: parse_percent (?)"]
    assert found[5] == ["amount: parse_number ($12x)"]
    assert found[6] == ["opened: parse_date('%d-%b-%y') (31-Feb-99)"]


def test_declared_missing_tokens_and_only_those(tmp_path: Path, store: DatasetStore) -> None:
    path = tmp_path / "loans.csv"
    path.write_text("zip,amount,rate,opened,origin,status\n02134,$1,?,28-Feb-97,NA,paid\n02134,$2,1%,?,?,paid\n")
    result = admit(path, store, loan_config(na_values=["?"]))
    assert_accounted(store, result)
    rows = curated_rows(store, result.record.batch_id).set_index("_row")
    assert pd.isna(rows.loc[2, "rate"]) and rows.loc[2, "origin"] == "NA"
    assert pd.isna(rows.loc[3, "opened"]) and pd.isna(rows.loc[3, "origin"])


def test_missing_tokens_per_column(tmp_path: Path, store: DatasetStore) -> None:
    path = tmp_path / "loans.csv"
    path.write_text("zip,amount,rate,opened,origin,status\n02134,$1,n/a,28-Feb-97,n/a,paid\n")
    result = admit(path, store, loan_config(na_values={"rate": ["n/a"]}))
    assert_accounted(store, result)
    row = curated_rows(store, result.record.batch_id).iloc[0]
    assert pd.isna(row["rate"]) and row["origin"] == "n/a"


def test_separators_of_any_length(tmp_path: Path, store: DatasetStore) -> None:
    for sep, name in ((", ", "comma-space.csv"), ("||", "pipes.csv"), (";", "semicolon.csv")):
        path = tmp_path / name
        lines = [
            "zip,amount,rate,opened,origin,status",
            "02134,$5,1%,28-Feb-97,EU,paid",
            "10001,$7,2%,1-Mar-05,AS,default",
        ]
        path.write_text("\n".join(line.replace(",", sep) for line in lines) + "\n")
        result = admit(path, store, loan_config(sep=sep))
        assert_accounted(store, result)
        rows = curated_rows(store, result.record.batch_id)
        assert rows["zip"].tolist() == ["02134", "10001"], sep
        assert rows["amount"].tolist() == [5.0, 7.0], sep


def test_a_wrong_separator_is_named(tmp_path: Path, store: DatasetStore) -> None:
    path = tmp_path / "loans.csv"
    path.write_text("zip;amount;rate;opened;origin;status\n02134;$5;1%;28-Feb-97;EU;paid\n")
    result = admit(path, store, loan_config(sep=", "))
    assert result.outcome == "rejected"
    assert "looks delimited by ';', not ', '" in result.message


def test_century_pivot_and_leap_days() -> None:
    frame = pd.DataFrame({"d": ["28-Feb-97", "1-Jan-26", "1-Jan-27", "29-Feb-00", "29-Feb-96", None]})
    rules = {"d": ParseRule(kind="date", format="%d-%b-%y", century_pivot=26)}
    parsed, failures = apply_parse_rules(frame, rules)
    assert parsed["d"].tolist() == ["1997-02-28", "2026-01-01", "1927-01-01", "2000-02-29", "1996-02-29", None]
    assert failures.empty
    python_rule = {"d": ParseRule(kind="date", format="%d-%b-%y")}
    assert apply_parse_rules(frame, python_rule)[0]["d"].iloc[2] == "2027-01-01"
