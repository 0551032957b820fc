"""The work, one sub-package per stage of the cycle, and the pieces training and serving share.

    ingest/     read files, a landing folder or a SQL table; validate; quarantine; the curated store
    train/      prepare and split, tune (Ray Tune), the final fit, evaluate, report
    registry/   the model registry; bundle, gate, smoke test, export, reproduce
    monitor/    the request log and drift
    preprocess.py  the fitted preprocessing that training, the service and exports all apply
    records.py     request records checked through the pandera schema itself (the reference path)
    paths.py       where state lives (MLCYCLE_HOME)

Every function here is plain Python that knows nothing of Prefect; `flows/` wraps them as tasks. Nothing here
imports `flows/` or `serving/` (tests/test_layout.py holds it so).
"""
