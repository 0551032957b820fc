"""What every worker process of a Ray that mlcycle starts imports before it takes any work.

A Tune trial's worker spends 3–6 s on its imports (Ray Tune, pandas, XGBoost) before its first round, with its
CPU slot idle. Ray starts one worker per CPU with the node (its prestarted workers) and places a trial actor on one
of those when one is idle, so `tasks.train.tune` asks Ray to import `tasks.train.trial` in every worker as it starts (Ray's
raylet setting `preload_python_modules`): the imports overlap Ray's own start-up and whatever the flow does before
it tunes, and a trial starts on a worker that is ready.

On a Ray cluster that mlcycle joins (`RAY_ADDRESS`), the same holds when the cluster's nodes were started with
`RAY_preload_python_modules=tasks.train.preload` in their environment; otherwise each trial worker imports on start.
"""

from __future__ import annotations

import os
import sys
import time

from mlcycle.tasks.train.keeper import LIGHT_WORKER
from mlcycle.tasks.train.warm import PRELOADED

_began = time.monotonic()

if not os.environ.get(LIGHT_WORKER):  # a worker for an actor that needs none of them (tasks.train.keeper)
    import mlcycle.tasks.train.trial  # noqa: F401

    # In the worker's log (Ray's session logs/worker-*-<pid>.err): how long the imports took, and that they are done.
    print(f"{PRELOADED} in {time.monotonic() - _began:.1f} s (pid {os.getpid()})", file=sys.stderr, flush=True)
