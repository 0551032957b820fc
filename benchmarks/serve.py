"""Serving throughput and latency on loopback, against a bare floor measured in the same run.

Trains an Adult model (300 trees, depth 6; no Ray, no Prefect) into a throw-away MLCYCLE_HOME, then serves it three
ways, one at a time, and drives each with the same low-overhead HTTP/1.1 keep-alive load generator:
  floor      a bare Starlette app under uvicorn, one worker: JSON records → NumPy array (category codes by dict
             lookup) → booster.inplace_predict; no validation, no pandas
  batch-off  `bentoml serve serving.service:MLCycleService`, batching off (the default)
  batch-on   the same with serving.batching.enabled
Single-record requests at concurrency 1, 8 and 32, and 1,000-record requests at concurrency 2; requests/s, p50,
p99, errors, rows/s. The machine is shared (2 cores, the load generator included): figures are noisy.
Run: `.venv/bin/python benchmarks/serve.py [--seconds 10]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FLOOR_APP = """
import json, math
import numpy as np, orjson, xgboost as xgb
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

ROOT = {root!r}
spec = json.load(open(ROOT + "/preprocessor.json"))
booster = xgb.Booster(); booster.load_model(ROOT + "/booster.ubj"); booster.set_param({{"nthread": 1}})
features = [(f["name"], {{c: float(i) for i, c in enumerate(f["categories"])}} if f["kind"] == "categorical" else None)
            for f in spec["features"]]

async def predict(request):
    records = orjson.loads(await request.body())["records"]
    x = np.array([[(codes.get(r[name], math.nan) if r[name] is not None else math.nan) if codes is not None
                   else r[name] for name, codes in features] for r in records], dtype=np.float64)
    p = booster.inplace_predict(x)
    return Response(orjson.dumps({{"predictions": [{{"probability": float(v)}} for v in p]}}), media_type="application/json")

async def ready(request):
    return Response(b"ok")

app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/readyz", ready)])
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def train_model() -> str:
    """The benchmark's model, saved to the temporary model store as the Adult champion; returns its tag."""
    from schemas import load_config, resolve_schema
    from tasks import registry
    from tasks.ingest.read import read_source
    from tasks.ingest.validate import validate_frame
    from tasks.paths import configure_environment
    from tasks.preprocess import apply_preprocessor, fit_preprocessor
    from tasks.registry.bundle import collect_lineage, save_bundle
    from tasks.train.boost import TrainingData, fit_booster, xgb_params
    from tasks.train.prepare import encode_target, feature_columns, split_frame

    configure_environment()
    config = load_config(ROOT / "configs/adult.yaml")
    cache = Path(os.environ.get("MLCYCLE_WHEEL_CACHE", ROOT / ".mlcycle" / "cache" / "wheels"))  # kept across runs
    raw = read_source(config.source, cache, config.seed)
    valid = validate_frame(raw.frame, resolve_schema(config.schema_ref)).valid
    splits = split_frame(valid, raw.origin["part"], config)
    spec = fit_preprocessor(splits.train, feature_columns(list(splits.train.columns), config), config.preprocess)
    data = TrainingData(apply_preprocessor(spec, splits.train), encode_target(splits.train[config.target], config),
                        apply_preprocessor(spec, splits.valid), encode_target(splits.valid[config.target], config))  # fmt: skip
    params = xgb_params("binary", {"eta": 0.1, "max_depth": 6}, nthread=2, seed=0)
    booster = fit_booster(data, params, 300, 300)  # early stopping never cuts: 300 trees as the issue measured
    lineage = collect_lineage("bench", "bench", config, {})
    tag = save_bundle(booster, spec, config, ["<=50K", ">50K"], {"primary": "roc_auc", "test": {"roc_auc": 0}}, lineage)
    registry.promote(tag, reason="benchmark model")
    return tag


class Server:
    def __init__(self, cmd: list[str], env: dict[str, str], cwd: Path) -> None:
        self.port = free_port()
        cmd = [part.replace("{port}", str(self.port)) for part in cmd]
        self.proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=cwd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip

    def wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError("server not ready in 180 s")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


async def _client(port: int, request: bytes, stop: float, latencies: list[float], errors: list[str]) -> None:
    """One keep-alive connection sending the same request until `stop`; records latency or the error."""
    reader = writer = None
    while time.monotonic() < stop:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert reader is not None
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))  # fmt: skip
            await reader.readexactly(length)
            if status == 200:
                latencies.append(time.perf_counter() - started)
            else:
                errors.append(str(status))
        except (OSError, asyncio.IncompleteReadError, StopIteration, ValueError) as exc:
            errors.append(type(exc).__name__)
            if writer is not None:
                writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


def load(port: int, records: list[dict], concurrency: int, seconds: float) -> dict[str, float]:
    body = json.dumps({"records": records}).encode()
    request = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body  # fmt: skip
    latencies: list[float] = []
    errors: list[str] = []

    async def run() -> None:
        stop = time.monotonic() + seconds
        await asyncio.gather(*(_client(port, request, stop, latencies, errors) for _ in range(concurrency)))

    started = time.monotonic()
    asyncio.run(run())
    elapsed = time.monotonic() - started
    ordered = sorted(latencies) or [float("nan")]
    return {"rps": len(latencies) / elapsed, "p50": statistics.median(ordered) * 1000,
            "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, "errors": len(errors),
            "rows": len(latencies) * len(records) / elapsed}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0, help="Per scenario.")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="mlcycle-bench-serve-"))
    os.environ["MLCYCLE_HOME"] = str(home)
    os.environ["BENTOML_HOME"] = str(home / "bentoml")
    tag = train_model()
    import bentoml

    model_path = bentoml.models.get(tag).path
    (home / "floor_app.py").write_text(textwrap.dedent(FLOOR_APP.format(root=model_path)))
    golden = json.loads((ROOT / "serving/examples/adult.json").read_text())
    single = [golden[0]]
    batch = (golden * 84)[:1000]
    bento = [sys.executable, "-m", "bentoml", "serve", "serving.service:MLCycleService", "--host", "127.0.0.1",
             "--port", "{port}", "--timeout-keep-alive", "75"]  # fmt: skip
    setups = {
        "floor": (
            [
                sys.executable,
                "-m",
                "uvicorn",
                "floor_app:app",
                "--host",
                "127.0.0.1",
                "--port",
                "{port}",
                "--workers",
                "1",
                "--log-level",
                "warning",
                "--no-access-log",
                "--timeout-keep-alive",
                "75",
            ],
            {},
            home,
        ),  # fmt: skip
        "batch-off": (
            bento,
            {"MLCYCLE_MODEL_TAG": tag, "MLCYCLE_SERVING": '{"batching": {"enabled": false}}'},
            ROOT,
        ),  # fmt: skip
        "batch-on": (
            bento,
            {"MLCYCLE_MODEL_TAG": tag, "MLCYCLE_SERVING": '{"batching": {"enabled": true}}'},
            ROOT,
        ),  # fmt: skip
    }
    print(f"model {tag}: 300 trees, depth 6; {args.seconds:.0f} s per scenario; loopback, 2 shared cores")
    print(
        f"{'server':<10} {'records':>7} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'rows/s':>9}"
    )
    results: dict[tuple[str, int, int], dict[str, float]] = {}
    for name, (cmd, env, cwd) in setups.items():
        server = Server(cmd, env, cwd)
        try:
            server.wait_ready()
            load(server.port, single, 4, 2)  # warm up
            for records, concurrency in ((single, 1), (single, 8), (single, 32), (batch, 2)):
                r = load(server.port, records, concurrency, args.seconds)
                results[(name, len(records), concurrency)] = r
                print(f"{name:<10} {len(records):>7} {concurrency:>4} {r['rps']:>8.1f} {r['p50']:>8.2f} "
                      f"{r['p99']:>8.2f} {r['errors']:>6} {r['rows']:>9,.0f}", flush=True)  # fmt: skip
        finally:
            server.stop()
    floor32 = results[("floor", 1, 32)]["rps"]
    best = max(("batch-off", "batch-on"), key=lambda n: results[(n, 1, 32)]["rps"])
    ratio = results[(best, 1, 32)]["rps"] / floor32
    p99_8 = results[(best, 1, 8)]["p99"]
    rows = max(results[(n, 1000, 2)]["rows"] for n in ("batch-off", "batch-on"))
    floor_rows = results[("floor", 1000, 2)]["rows"]
    print(
        f"req/s vs floor {ratio:.2f} at concurrency 32 ({best}); p99 at concurrency 8 {p99_8:.1f} ms; "
        f"batch scoring {rows:,.0f} rows/s ({rows / floor_rows:.2f} of the floor's {floor_rows:,.0f})"
    )


if __name__ == "__main__":
    main()
