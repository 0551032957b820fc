"""Serving throughput and latency on loopback, against a bare floor measured in the same run.

Trains an Adult model (300 trees, depth 6; no Ray, no Prefect) into a throw-away MLCYCLE_HOME, then serves it three
ways, one at a time, and drives each with the same low-overhead HTTP/1.1 keep-alive load generator:
  floor      a bare Starlette app under uvicorn, one worker: JSON records → NumPy array (category codes by dict
             lookup) → booster.inplace_predict; no validation, no pandas
  batch-off  `bentoml serve serving.service:MLCycleService`, batching off (the default)
  batch-on   the same with serving.batching.enabled
Single-record requests at concurrency 1, 8 and 32, and 1,000-record requests at concurrency 2; requests/s, p50,
p99, errors, rows/s. Then /explain on batch-off, one client: 1 record, and the largest request it allows
(`serving.explain_max_records`, read from /metadata); the last line is
`explain: largest request N records p99 X ms`. The machine is shared (2 cores, the load generator included):
figures are noisy; take the benchmark lock for figures worth keeping (`flock /tmp/mlcycle-bench.lock ...`).
Run: `.venv/bin/python benchmarks/serve.py [--seconds 10]`.
`--small` (the suite runs it): a 20-tree model fitted on 300 made-up rows, 1 s per scenario, in about a minute.

`--shadow`: instead, what scoring a challenger in shadow costs the champion's answers. Two `bentoml serve` of the
same champion run side by side, one with a second model (200 trees, depth 5, its own preprocessing fitted on other
rows) in shadow, one without (its own home, whose registry has no shadow); single-record requests at concurrency 32
go to each in turn, `--rounds` times, so both see the same machine. Prints req/s and p99 per round, their medians,
the ratio, and how many records the shadow scored and dropped (read from the server's /metrics).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
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
SMALL_ROUNDS = 20

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


def train_model(shadow: bool = False, small: bool = False) -> str:
    """The benchmark's model, saved to the temporary model store as the Adult champion; returns its tag.
    `shadow`: a second model (other rows, other shape), saved as a challenger and not promoted. `small`: a 20-tree
    model fitted on 300 made-up rows, as the service tests fit theirs."""
    from mlcycle.schemas import load_config, resolve_schema
    from mlcycle.tasks import registry
    from mlcycle.tasks.ingest.read import read_source
    from mlcycle.tasks.ingest.validate import validate_frame
    from mlcycle.tasks.paths import configure_environment
    from mlcycle.tasks.preprocess import apply_preprocessor, fit_preprocessor
    from mlcycle.tasks.registry.bundle import collect_lineage, save_bundle
    from mlcycle.tasks.train.boost import TrainingData, fit_booster, xgb_params
    from mlcycle.tasks.train.prepare import encode_target, feature_columns, split_frame

    configure_environment()
    if small:
        sys.path.insert(0, str(ROOT))
        from tests.service_models import save_small_model

        tag = save_small_model("adult", rounds=SMALL_ROUNDS, seed=int(shadow))
        if not shadow:
            registry.promote(tag, reason="benchmark model")
        return tag
    config = load_config(ROOT / "configs/adult.yaml")
    cache = Path(os.environ.get("MLCYCLE_WHEEL_CACHE", ROOT / ".mlcycle" / "cache" / "wheels"))  # kept across runs
    raw = read_source(config.source, cache, config.seed)
    valid = validate_frame(raw.frame, resolve_schema(config.schema_ref)).valid
    splits = split_frame(valid, raw.origin["part"], config)
    spec = fit_preprocessor(splits.train, feature_columns(list(splits.train.columns), config), config.preprocess)
    data = TrainingData(apply_preprocessor(spec, splits.train), encode_target(splits.train[config.target], config),
                        apply_preprocessor(spec, splits.valid), encode_target(splits.valid[config.target], config))  # fmt: skip
    if shadow:
        train = splits.train.sample(frac=0.7, random_state=1)
        spec = fit_preprocessor(train, feature_columns(list(train.columns), config), config.preprocess)
        data = TrainingData(apply_preprocessor(spec, train), encode_target(train[config.target], config),
                            apply_preprocessor(spec, splits.valid), encode_target(splits.valid[config.target], config))  # fmt: skip
    shape = {"eta": 0.1, "max_depth": 5 if shadow else 6}
    rounds = 200 if shadow else 300
    booster = fit_booster(data, xgb_params("binary", shape, nthread=2, seed=0), rounds, rounds)  # never cut early
    lineage = collect_lineage("bench", "bench", config, {})
    tag = save_bundle(booster, spec, config, ["<=50K", ">50K"], {"primary": "roc_auc", "test": {"roc_auc": 0}}, lineage)
    if not shadow:
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


def load(port: int, records: list[dict], concurrency: int, seconds: float, route: str = "/predict") -> dict[str, float]:
    body = json.dumps({"records": records}).encode()
    request = (f"POST {route} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
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


def shadow_metrics(port: int) -> dict[str, float]:
    """The shadow's scored and dropped records, from the server's Prometheus /metrics."""
    import httpx

    found = {"scored": 0.0, "dropped": 0.0}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text.splitlines():
        if line.startswith("mlcycle_shadow_records_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            found[outcome] = found.get(outcome, 0.0) + float(line.rsplit(" ", 1)[1])
    return found


def compare_shadow(home: Path, seconds: float, rounds: int, small: bool) -> None:
    """Champion answers with and without a challenger in shadow, side by side on one machine."""
    import httpx

    from mlcycle.tasks import registry

    champion = train_model(small=small)
    challenger = train_model(shadow=True, small=small)
    off_home = home / "no-shadow"
    (off_home / "models").mkdir(parents=True)
    shutil.copy(registry.registry_path(), off_home / "models" / "registry.sqlite")  # before the shadow: none there
    registry.put_in_shadow(challenger, reason="benchmark shadow")
    golden = json.loads((ROOT / "serving/examples/adult.json").read_text())
    bento = [sys.executable, "-m", "bentoml", "serve", "mlcycle.serving.service:MLCycleService", "--host", "127.0.0.1",
             "--port", "{port}", "--timeout-keep-alive", "75"]  # fmt: skip
    env = {"MLCYCLE_MODEL_TAG": "adult", "MLCYCLE_SERVING": '{"batching": {"enabled": false}}'}
    servers = {"shadow-off": Server(bento, {**env, "MLCYCLE_HOME": str(off_home)}, ROOT),
               "shadow-on": Server(bento, env, ROOT)}  # fmt: skip
    shapes = ("20 trees, depth 4", "20 trees, depth 4") if small else ("300 trees, depth 6", "200 trees, depth 5")
    print(f"champion {champion} ({shapes[0]}); in shadow {challenger} ({shapes[1]}); {seconds:.0f} s "
          f"per run, single records at concurrency 32, {rounds} rounds; loopback, 2 shared cores")  # fmt: skip
    results: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
    try:
        for server in servers.values():
            server.wait_ready()
        metadata = httpx.get(f"http://127.0.0.1:{servers['shadow-on'].port}/metadata", timeout=10).json()
        deadline = time.monotonic() + 60
        while metadata.get("shadow") != challenger and time.monotonic() < deadline:
            time.sleep(1)
            metadata = httpx.get(f"http://127.0.0.1:{servers['shadow-on'].port}/metadata", timeout=10).json()
        assert metadata.get("shadow") == challenger, f"the shadow was not loaded: {metadata.get('shadow')}"
        off = httpx.get(f"http://127.0.0.1:{servers['shadow-off'].port}/metadata", timeout=10).json()
        assert off.get("shadow") is None, off.get("shadow")
        for server in servers.values():
            load(server.port, golden[:1], 4, 0.5 if small else 2)  # warm up
        print(f"{'server':<11} {'round':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
        for i in range(rounds):
            order = list(servers.items()) if i % 2 == 0 else list(reversed(servers.items()))
            for name, server in order:
                r = load(server.port, golden[:1], 32, seconds)
                results[name].append(r)
                print(f"{name:<11} {i + 1:>5} {r['rps']:>8.1f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['errors']:>6}",
                      flush=True)  # fmt: skip
        scored = shadow_metrics(servers["shadow-on"].port)
    finally:
        for server in servers.values():
            server.stop()
    rps = {n: statistics.median(r["rps"] for r in rs) for n, rs in results.items()}
    p99 = {n: statistics.median(r["p99"] for r in rs) for n, rs in results.items()}
    spread = {n: (min(r["p99"] for r in rs), max(r["p99"] for r in rs)) for n, rs in results.items()}
    answered = sum(r["rps"] * seconds for r in results["shadow-on"])
    print(f"shadow: req/s {rps['shadow-on']:.1f} vs {rps['shadow-off']:.1f} without "
          f"({rps['shadow-on'] / rps['shadow-off'] - 1:+.1%}); p99 {p99['shadow-on']:.1f} ms vs "
          f"{p99['shadow-off']:.1f} ms (rounds {spread['shadow-on'][0]:.1f}-{spread['shadow-on'][1]:.1f} vs "
          f"{spread['shadow-off'][0]:.1f}-{spread['shadow-off'][1]:.1f}); the shadow scored {scored['scored']:,.0f} "
          f"records and dropped {scored['dropped']:,.0f} (~{answered:,.0f} answered, warm-up included)")  # fmt: skip


def compare_servers(home: Path, seconds: float, small: bool) -> None:
    """The floor and `bentoml serve` with batching off and on, one at a time, under the same loads; prints the
    table and the figure line."""
    tag = train_model(small=small)
    import bentoml

    model_path = bentoml.models.get(tag).path
    (home / "floor_app.py").write_text(textwrap.dedent(FLOOR_APP.format(root=model_path)))
    golden = json.loads((ROOT / "serving/examples/adult.json").read_text())
    single = [golden[0]]
    batch = (golden * 84)[:1000]
    bento = [sys.executable, "-m", "bentoml", "serve", "mlcycle.serving.service:MLCycleService", "--host", "127.0.0.1",
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
    shape = f"{SMALL_ROUNDS} trees, depth 4, on 300 made-up rows" if small else "300 trees, depth 6"
    print(f"model {tag}: {shape}; {seconds:.0f} s per scenario; loopback, 2 shared cores")
    print(
        f"{'server':<10} {'records':>7} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'rows/s':>9}"
    )
    results: dict[tuple[str, int, int], dict[str, float]] = {}
    explained: dict[int, dict[str, float]] = {}
    for name, (cmd, env, cwd) in setups.items():
        server = Server(cmd, env, cwd)
        try:
            server.wait_ready()
            load(server.port, single, 4, 0.5 if small else 2)  # warm up
            for records, concurrency in ((single, 1), (single, 8), (single, 32), (batch, 2)):
                r = load(server.port, records, concurrency, seconds)
                results[(name, len(records), concurrency)] = r
                print(f"{name:<10} {len(records):>7} {concurrency:>4} {r['rps']:>8.1f} {r['p50']:>8.2f} "
                      f"{r['p99']:>8.2f} {r['errors']:>6} {r['rows']:>9,.0f}", flush=True)  # fmt: skip
            if name == "batch-off":
                explained = explain_latency(server.port, golden, seconds)
        finally:
            server.stop()
    floor32 = results[("floor", 1, 32)]["rps"]
    best = max(("batch-off", "batch-on"), key=lambda n: results[(n, 1, 32)]["rps"])
    ratio = results[(best, 1, 32)]["rps"] / floor32
    p99, floor_p99 = results[(best, 1, 32)]["p99"], results[("floor", 1, 32)]["p99"]
    rows = max(results[(n, 1000, 2)]["rows"] for n in ("batch-off", "batch-on"))
    floor_rows = results[("floor", 1000, 2)]["rows"]
    print(
        f"req/s vs floor {ratio:.2f} at concurrency 32 ({best}); p99 {p99:.1f} ms ({p99 / floor_p99:.2f} of the "
        f"floor's {floor_p99:.1f}); "
        f"batch scoring {rows:,.0f} rows/s ({rows / floor_rows:.2f} of the floor's {floor_rows:,.0f})"
    )
    largest = max(explained)
    print(f"explain: largest request {largest} records p99 {explained[largest]['p99']:.1f} ms")


def explain_latency(port: int, golden: list[dict], seconds: float) -> dict[int, dict[str, float]]:
    """/explain from one client: 1 record, then the largest request the server allows (its
    `serving.explain_max_records`); prints p50/p99 of each and returns them by record count."""
    import httpx

    limit = httpx.get(f"http://127.0.0.1:{port}/metadata", timeout=10).json()["serving"]["explain_max_records"]
    out = {}
    for count in (1, limit):
        records = (golden * (count // len(golden) + 1))[:count]
        r = out[count] = load(port, records, 1, max(seconds, 2.0), route="/explain")  # a few large requests at least
        print(f"explain    {count:>7} {1:>4} {r['rps']:>8.1f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['errors']:>6} "
              f"{r['rows']:>9,.0f}", flush=True)  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=None, help="Per scenario (default 10, --small 1).")
    parser.add_argument("--shadow", action="store_true", help="Only the shadow on/off comparison.")
    parser.add_argument("--rounds", type=int, default=3, help="--shadow: runs per server, alternating.")
    parser.add_argument("--small", action="store_true", help="A 20-tree model on made-up rows, 1 s per scenario.")
    args = parser.parse_args()
    seconds = args.seconds if args.seconds is not None else 1.0 if args.small else 10.0
    home = Path(tempfile.mkdtemp(prefix="mlcycle-bench-serve-"))
    os.environ["MLCYCLE_HOME"] = str(home)
    os.environ["BENTOML_HOME"] = str(home / "bentoml")
    try:
        if args.shadow:
            compare_shadow(home, seconds, args.rounds, args.small)
        else:
            compare_servers(home, seconds, args.small)
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
