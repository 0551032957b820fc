"""Export a model for client devices: a self-contained folder with the model (ONNX or XGBoost JSON), the
preprocessing spec, the request schema, a reference predictor (`predict.py`, no mlcycle import) and a README.

The ONNX graph is written from the booster's own JSON dump (ai.onnx.ml `TreeEnsemble`, opset 5), not through a
converter, because the traps of XGBoost → ONNX conversion all break parity silently:
- feature names: split indices refer to the booster's feature order, which must be the preprocessor's;
- base_score: XGBoost 3 stores it as a vector string ("[5E-1]") and applies it as a margin (logit for
  binary:logistic); a converter that reads it as a probability, or misses it, shifts every prediction;
- early stopping: `Booster.predict` uses every tree the booster holds, whatever `best_iteration` says; the export
  keeps exactly the trees the served model uses;
- categorical features: our boosters split natively on category sets, which onnxmltools does not convert; the
  ONNX graph uses set membership (`BRANCH_MEMBER`) on the category codes the reference predictor computes;
- multiclass (`multi:softprob`): one tree per class per round (`tree_info` names its class) and one base margin per
  class; each class's margin is summed over its own trees in XGBoost's order, then a softmax across classes.
Every export is checked: the exported artifact, run by the reference predictor, must match the registered model
on the golden rows to 1e-5, or the export fails.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pandera.pandas as pa
import xgboost as xgb

from mlcycle.tasks.errors import UserError
from mlcycle.tasks.preprocess import PreprocessorSpec

Format = Literal["onnx", "xgboost-json"]
OUTPUT = {"binary": "positive-class probability", "regression": "predicted value",
          "multiclass": "one probability per class, in the order of `classes`"}  # fmt: skip
PREDICTOR_TEMPLATE = Path(__file__).with_name("export_predictor.py")
PARITY_TOLERANCE = 1e-5
# BRANCH_LT: XGBoost goes left when value < threshold; BRANCH_MEMBER: right when the category is in the set.
_BRANCH_LT, _BRANCH_MEMBER = 1, 6


class ExportError(UserError, RuntimeError):
    """An export that cannot be trusted: a model the exporter cannot represent, or one that fails parity."""


def parse_base_score(value: str | float) -> float:
    """XGBoost 3 writes base_score as a vector string, `"[5E-1]"`; older versions as a plain number string."""
    text = str(value).strip().strip("[]").split(",")[0]
    return float(text)


def base_margin(model: dict[str, Any]) -> float:
    """The constant added to the sum of leaves, in margin space (a logit for logistic objectives)."""
    learner = model["learner"]
    base = parse_base_score(learner["learner_model_param"]["base_score"])
    objective = learner["objective"]["name"]
    if objective in ("binary:logistic", "reg:logistic"):
        return math.log(base / (1 - base))
    if objective in ("reg:squarederror", "reg:absoluteerror", "reg:pseudohubererror"):
        return base
    raise ExportError(f"objective {objective!r} is not supported by the ONNX export")


def class_base_margins(model: dict[str, Any]) -> list[float]:
    """A `multi:softprob` booster's base margin per class: XGBoost 3 stores one per class, already as a margin
    (`"[2.4E-1,4.7E-1,-7.1E-1]"`); an older single value stands for every class."""
    learner = model["learner"]
    classes = int(learner["learner_model_param"]["num_class"])
    values = [float(v) for v in str(learner["learner_model_param"]["base_score"]).strip().strip("[]").split(",")]
    if len(values) == 1:
        values = values * classes
    if len(values) != classes:
        raise ExportError(f"base_score has {len(values)} values for {classes} classes")
    return values


def booster_json(booster: xgb.Booster) -> dict[str, Any]:
    return dict(json.loads(booster.save_raw("json")))


def booster_to_onnx(booster: xgb.Booster, feature_names: list[str]) -> Any:
    """An ONNX model computing what `booster.predict` computes on the preprocessed float32 matrix `X`."""
    from onnx import TensorProto, helper, numpy_helper

    if booster.feature_names is not None and list(booster.feature_names) != list(feature_names):
        raise ExportError(f"the booster's features {booster.feature_names} are not the preprocessor's "
                          f"{feature_names} in the same order")  # fmt: skip
    model = booster_json(booster)
    gbm = model["learner"]["gradient_booster"]
    if gbm.get("name", "gbtree") != "gbtree" or int(model["learner"]["learner_model_param"].get("num_target", 1)) != 1:
        raise ExportError("only single-target tree boosters (gbtree) can be exported")
    nodes: dict[str, list[Any]] = {k: [] for k in ("feat", "mode", "split", "true", "true_leaf", "false",
                                                   "false_leaf", "missing_true")}  # fmt: skip
    roots: list[int] = []
    leaves: list[float] = []
    targets: list[int] = []
    members: list[float] = []

    def add_node(feature: int, mode: int, split: float, missing_true: int) -> int:
        for key, value in (("feat", feature), ("mode", mode), ("split", split), ("missing_true", missing_true)):
            nodes[key].append(value)
        return len(nodes["feat"]) - 1

    def add_leaf(side: str, value: float, target: int) -> None:
        nodes[side].append(len(leaves))
        nodes[f"{side}_leaf"].append(1)
        leaves.append(value)
        targets.append(target)

    def add_constant(value: float, target: int) -> None:
        # a tree that is one leaf: a split whose two branches both give that value
        roots.append(add_node(0, _BRANCH_LT, 0.0, 0))
        add_leaf("true", value, target)
        add_leaf("false", value, target)

    # Target 0 is the base margin, target k the k-th tree: each output column holds one tree's leaf value exactly,
    # and a float32 running sum (CumSum) adds them in XGBoost's order: base, tree 0, tree 1, ... Summing inside the
    # ensemble (another order, or in double) differs by several float32 ulps, 3e-5 on a regression of ~40.
    # Multiclass: targets 0..classes-1 are the classes' base margins, and each class sums its own trees.
    objective = model["learner"]["objective"]["name"]
    multiclass = objective == "multi:softprob"
    if objective == "multi:softmax":
        raise ExportError("multi:softmax answers a bare class; only multi:softprob (probabilities) is exported")
    bases = class_base_margins(model) if multiclass else [base_margin(model)]
    for target, value in enumerate(bases):
        add_constant(value, target)
    offset = len(bases) - 1  # tree k is target k + offset
    trees = gbm["model"]["trees"]
    for number, tree in enumerate(trees, start=1 + offset):
        left, right = tree["left_children"], tree["right_children"]
        cond, index, kind, default_left = (tree["split_conditions"], tree["split_indices"], tree["split_type"],
                                           tree["default_left"])  # fmt: skip
        sets = {}
        for k, node in enumerate(tree["categories_nodes"]):
            start = tree["categories_segments"][k]
            sets[node] = tree["categories"][start : start + tree["categories_sizes"][k]]
        if left[0] == -1:
            add_constant(cond[0], number)
            continue
        internal = [i for i in range(len(left)) if left[i] != -1]
        first = len(nodes["feat"])
        position = {node: first + k for k, node in enumerate(internal)}
        roots.append(position[0])
        for i in internal:
            if kind[i] == 1:
                add_node(index[i], _BRANCH_MEMBER, 0.0, 0 if default_left[i] else 1)
                members.extend([*map(float, sets[i]), math.nan])
                branches = (right[i], left[i])
            else:
                add_node(index[i], _BRANCH_LT, cond[i], 1 if default_left[i] else 0)
                branches = (left[i], right[i])
            for side, child in zip(("true", "false"), branches, strict=True):
                if left[child] == -1:
                    add_leaf(side, cond[child], number)
                else:
                    nodes[side].append(position[child])
                    nodes[f"{side}_leaf"].append(0)

    def f32(name: str, values: list[float]) -> Any:
        return numpy_helper.from_array(np.asarray(values, dtype=np.float32), name)

    member_attr = {"membership_values": f32("membership_values", members)} if members else {}
    ensemble = helper.make_node(
        "TreeEnsemble", ["X"], ["per_tree"], domain="ai.onnx.ml", name="trees",
        aggregate_function=1, n_targets=len(trees) + len(bases), post_transform=0, tree_roots=roots,
        nodes_featureids=nodes["feat"], nodes_modes=numpy_helper.from_array(np.asarray(nodes["mode"], np.uint8), "m"),
        nodes_splits=f32("nodes_splits", nodes["split"]), nodes_truenodeids=nodes["true"],
        nodes_trueleafs=nodes["true_leaf"], nodes_falsenodeids=nodes["false"], nodes_falseleafs=nodes["false_leaf"],
        nodes_missing_value_tracks_true=nodes["missing_true"], leaf_targetids=targets,
        leaf_weights=f32("leaf_weights", leaves), **member_attr,
    )  # fmt: skip
    if multiclass:
        return _multiclass_graph(ensemble, gbm["model"]["tree_info"], len(bases), feature_names)
    graph_nodes = [
        ensemble,
        helper.make_node("CumSum", ["per_tree", "cumsum_axis"], ["running"]),
        helper.make_node("Slice", ["running", "last", "end", "slice_axis"], ["margin"]),
    ]
    last = "Sigmoid" if objective in ("binary:logistic", "reg:logistic") else "Identity"
    graph_nodes.append(helper.make_node(last, ["margin"], ["prediction"]))
    ints = [numpy_helper.from_array(np.asarray(v, dtype=np.int64), name)
            for name, v in (("cumsum_axis", 1), ("slice_axis", [1]), ("last", [-1]),
                            ("end", [np.iinfo(np.int64).max]))]  # fmt: skip
    graph = helper.make_graph(
        graph_nodes, "mlcycle_xgboost",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, len(feature_names)])],
        [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, [None, 1])],
        initializer=ints,
    )  # fmt: skip
    onnx_model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 5)], ir_version=10
    )
    onnx_model.doc_string = "XGBoost trees as ai.onnx.ml TreeEnsemble; input: preprocessed features, see predict.py"
    return onnx_model


def _multiclass_graph(ensemble: Any, tree_info: list[int], classes: int, feature_names: list[str]) -> Any:
    """Class margins from the per-tree outputs: for each class its base and its own trees, gathered in XGBoost's
    order into a (rows, classes, 1 + rounds) block, summed by a float32 running sum, then a softmax."""
    from onnx import TensorProto, helper, numpy_helper

    per_class = [[c] + [classes + t for t, owner in enumerate(tree_info) if owner == c] for c in range(classes)]
    if len({len(trees) for trees in per_class}) != 1:
        raise ExportError("the classes have different numbers of trees; cannot export")
    ints = [numpy_helper.from_array(np.asarray(v, dtype=np.int64), name)
            for name, v in (("per_class", per_class), ("cumsum_axis", 2), ("slice_axis", [2]), ("last", [-1]),
                            ("end", [np.iinfo(np.int64).max]), ("squeeze_axes", [2]))]  # fmt: skip
    graph_nodes = [
        ensemble,
        helper.make_node("Gather", ["per_tree", "per_class"], ["by_class"], axis=1),
        helper.make_node("CumSum", ["by_class", "cumsum_axis"], ["running"]),
        helper.make_node("Slice", ["running", "last", "end", "slice_axis"], ["last_sum"]),
        helper.make_node("Squeeze", ["last_sum", "squeeze_axes"], ["margin"]),
        helper.make_node("Softmax", ["margin"], ["prediction"], axis=1),
    ]
    graph = helper.make_graph(
        graph_nodes, "mlcycle_xgboost_multiclass",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, len(feature_names)])],
        [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, [None, classes])],
        initializer=ints,
    )  # fmt: skip
    onnx_model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 5)], ir_version=10
    )
    onnx_model.doc_string = ("XGBoost multi:softprob trees as ai.onnx.ml TreeEnsemble; output: one probability per "
                             "class, in meta.json's `classes` order; input: preprocessed features, see predict.py")  # fmt: skip
    return onnx_model


def schema_json(features_schema: type[pa.DataFrameModel]) -> dict[str, Any]:
    """The request fields of the features schema as plain JSON: type, nullable, allowed values and bounds."""
    fields = []
    for name, column in features_schema.to_schema().columns.items():
        entry: dict[str, Any] = {"name": name, "dtype": str(column.dtype), "nullable": bool(column.nullable)}
        for check in column.checks:
            entry.update({k: v for k, v in check.statistics.items() if v is not None})
        fields.append(entry)
    return {"schema": features_schema.__name__, "fields": json.loads(json.dumps(fields, default=str))}


@dataclass
class ExportReport:
    tag: str
    format: str
    folder: str
    model_file: str
    model_bytes: int
    folder_bytes: int
    trees: int
    parity_rows: int
    parity_max_abs_diff: float
    latency_p50_ms: float
    latency_p99_ms: float
    compact: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_predictor(folder: Path) -> Any:
    """The exported predict.py, imported from the folder under a private name (it imports nothing of mlcycle)."""
    spec = importlib.util.spec_from_file_location(f"_mlcycle_export_{abs(hash(str(folder)))}", folder / "predict.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.Predictor(folder)


def export_booster(tag: str, booster: xgb.Booster, preprocessor: PreprocessorSpec, task: str, classes: list[str],
                   features_schema: type[pa.DataFrameModel], fmt: Format, out: Path, records: list[dict[str, Any]],
                   expected: np.ndarray, latency_calls: int = 200) -> ExportReport:  # fmt: skip
    """Write the folder, then prove it: the reference predictor on `records` must give `expected` to 1e-5."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    notes = []
    best = booster.attributes().get("best_iteration")
    if best is not None and int(best) + 1 < booster.num_boosted_rounds():
        notes.append(f"the booster holds {booster.num_boosted_rounds()} trees past early stopping's best iteration "
                     f"{best}; like the served model, the export uses all of them")  # fmt: skip
    if fmt == "onnx":
        import onnx

        model_file = "model.onnx"
        proto = booster_to_onnx(booster, preprocessor.feature_names)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(out / model_file))
    else:
        model_file = "model.json"
        if booster.feature_names is not None and list(booster.feature_names) != preprocessor.feature_names:
            raise ExportError(f"the booster's features {booster.feature_names} are not the preprocessor's")
        booster.save_model(str(out / model_file))
    meta = {"tag": tag, "format": fmt, "model_file": model_file, "task": task, "classes": classes,
            "features": preprocessor.feature_names, "trees": booster.num_boosted_rounds(),
            "output": OUTPUT[task]}  # fmt: skip
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    (out / "preprocessor.json").write_text(json.dumps(preprocessor.model_dump(mode="json"), indent=2))
    (out / "schema.json").write_text(json.dumps(schema_json(features_schema), indent=2))
    (out / "golden.json").write_text(json.dumps(records, indent=1, default=str))
    shutil.copyfile(PREDICTOR_TEMPLATE, out / "predict.py")

    predictor = load_predictor(out)
    got = predictor.predict(records)
    diff = float(np.max(np.abs(got - np.asarray(expected, dtype=np.float64))))
    if not diff <= PARITY_TOLERANCE:
        raise ExportError(f"{tag}: the exported {fmt} model differs from the registered one by {diff:.3g} on "
                          f"{len(records)} golden rows (at most {PARITY_TOLERANCE:g} allowed); folder {out}")  # fmt: skip
    times = []
    for i in range(latency_calls):
        one = [records[i % len(records)]]
        start = time.perf_counter()
        predictor.predict(one)
        times.append((time.perf_counter() - start) * 1000)
    p50, p99 = (float(v) for v in np.percentile(times, [50, 99]))
    report = ExportReport(tag=tag, format=fmt, folder=str(out), model_file=model_file,
                          model_bytes=(out / model_file).stat().st_size, folder_bytes=0,
                          trees=booster.num_boosted_rounds(), parity_rows=len(records), parity_max_abs_diff=diff,
                          latency_p50_ms=p50, latency_p99_ms=p99, notes=notes)  # fmt: skip
    (out / "README.md").write_text(readme(report, meta))
    shutil.rmtree(out / "__pycache__", ignore_errors=True)  # left by importing predict.py for the check
    report.folder_bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    (out / "export.json").write_text(json.dumps(report.as_dict(), indent=2))
    return report


def readme(report: ExportReport, meta: dict[str, Any]) -> str:
    runtime = "onnxruntime" if report.format == "onnx" else "xgboost"
    return f"""# {report.tag}, exported as {report.format}

Self-contained: `{report.model_file}` (the model, {report.trees} trees), `preprocessor.json` (the fitted
preprocessing), `schema.json` (the request fields), `predict.py` (a reference predictor: Python, NumPy and
{runtime}; nothing from mlcycle), `golden.json` (the rows the export was checked on), `meta.json`.

Output: {meta["output"]}{f", labels {meta['classes']}" if meta["classes"] else ""}.

    pip install numpy {runtime}
    python predict.py golden.json

    from predict import Predictor
    Predictor(".").predict([{{...record...}}])

The model's input is the preprocessed float32 matrix `X` ({len(meta["features"])} columns, in
`meta.json` order, NaN = missing): numeric fields are filled and scaled as in `preprocessor.json`, categorical
fields become their index in the training vocabulary (an unseen category is missing). `predict.prepare` does it.

Checked at export: max |exported - registered| = {report.parity_max_abs_diff:.3g} on {report.parity_rows} golden
rows (limit {PARITY_TOLERANCE:g}); single-row latency through predict.py p50 {report.latency_p50_ms:.3f} ms,
p99 {report.latency_p99_ms:.3f} ms on the exporting machine.
"""


def offline_predictions(booster: xgb.Booster, preprocessor: PreprocessorSpec,
                        features_schema: type[pa.DataFrameModel], records: list[dict[str, Any]]) -> np.ndarray:  # fmt: skip
    """What the model answers for the records, validated and prepared exactly as the service does."""
    from mlcycle.tasks.records import check_records
    from mlcycle.tasks.registry.bundle import predict_raw

    frame, errors = check_records(records, features_schema, len(records))
    if frame is None:
        raise ExportError(f"golden records do not validate: {[e.as_dict() for e in errors][:5]}")
    return np.asarray(predict_raw(booster, preprocessor, frame), dtype=np.float64)


def compact_booster(bundle: Any, max_trees: int, max_depth: int) -> tuple[xgb.Booster, dict[str, Any]]:
    """Refit the bundle's model from its snapshot with at most `max_trees` trees of depth `max_depth`, and what that
    costs in the primary metric on the bundle's test split."""
    from mlcycle.tasks.registry.gate import improvement, metric_value
    from mlcycle.tasks.registry.reproduce import rebuild_data
    from mlcycle.tasks.train.boost import fit_booster, xgb_params
    from mlcycle.tasks.train.evaluate import PRIMARY_METRIC
    from mlcycle.tasks.train.prepare import encode_target, sample_weights

    config = bundle.config
    splits, preprocessor, data = rebuild_data(bundle)
    if preprocessor != bundle.preprocessor:
        raise ExportError(f"{bundle.tag}: the preprocessing refitted from its snapshot differs from the bundle's")
    sampled = dict(bundle.lineage.get("best_config", {}))
    sampled["max_depth"] = min(int(sampled.get("max_depth", 6)), max_depth)
    params = xgb_params(config.task, sampled, nthread=0, seed=config.seed, num_class=data.num_class)
    small = fit_booster(data, params, max_trees, config.tune.early_stopping_rounds)
    metric = PRIMARY_METRIC[config.task]
    y = encode_target(splits.test[config.target], config, bundle.classes)
    weights = sample_weights(splits.test, config)
    full = metric_value(config.task, metric, y, bundle.predict_raw(splits.test), weights)
    from mlcycle.tasks.registry.bundle import predict_raw

    reduced = metric_value(config.task, metric, y, predict_raw(small, preprocessor, splits.test), weights)
    info = {"max_trees": max_trees, "max_depth": max_depth, "trees": small.num_boosted_rounds(),
            "trees_before": bundle.booster.num_boosted_rounds(), "metric": metric, "test_rows": len(y),
            "full": full, "compact": reduced, "cost": -improvement(metric, reduced, full)}  # fmt: skip
    return small, info


def export_model(tag: str, fmt: Format, out: Path | None = None, compact: bool = False, max_trees: int = 50,
                 max_depth: int = 4, records: list[dict[str, Any]] | None = None) -> ExportReport:  # fmt: skip
    """Export a registered model (or a compact refit of it) and check it against the model on the golden rows."""
    from mlcycle.tasks.paths import mlcycle_home
    from mlcycle.tasks.registry.bundle import load_bundle
    from mlcycle.tasks.registry.smoke import bundle_golden_records

    bundle = load_bundle(tag)
    records = records if records is not None else bundle_golden_records(bundle)
    booster, info = bundle.booster, None
    if compact:
        booster, info = compact_booster(bundle, max_trees, max_depth)
    name, _, version = bundle.tag.partition(":")
    out = out or mlcycle_home() / "exports" / name / f"{version}-{fmt}{'-compact' if compact else ''}"
    expected = offline_predictions(booster, bundle.preprocessor, bundle.features_schema, records)
    report = export_booster(bundle.tag, booster, bundle.preprocessor, bundle.config.task, bundle.classes,
                            bundle.features_schema, fmt, out, records, expected)  # fmt: skip
    if info is not None:
        report.compact = info
        (out / "export.json").write_text(json.dumps(report.as_dict(), indent=2))
    return report


def records_of(frame: pd.DataFrame, fields: list[str]) -> list[dict[str, Any]]:
    return list(json.loads(frame[fields].to_json(orient="records", date_format="iso")))
