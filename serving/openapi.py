"""The service's OpenAPI document: BentoML's own, corrected to the contract the service keeps.

BentoML documents every API the same way: a JSON body built from the input descriptor, a 200 answer, and its own
400/404/500. The service answers more precisely than that (serving/service.py), and clients generate SDKs from
this document, so `contract_document` states what it really does:

- every refusal it can give, with the body it gives (`ErrorBody`): 400 unreadable, 401 API key, 409 a reload that
  would change the request contract, 413 too large, 415 a file type it cannot read, 422 broken records;
- `/predict_batch` takes a CSV or Parquet file as the raw body, not a JSON object with a `file` field;
- `/reload` and `/model` take no body (nothing, or `{}`), and say what they answer;
- `GET /metadata`, served beside BentoML's routes, is documented too;
- `/feedback` answers 404 for a label of an unknown request id or record and 409 for one contradicting a recorded
  label: a request the document calls valid can name a request that never existed;
- nullable fields are written as OpenAPI 3.0 has them (`nullable: true`), not as JSON Schema's `type: null`.

A request the document calls valid is answered 2xx; one it calls invalid gets a 4xx naming the problem
(tests/integration/test_service_contract.py holds the service to that with schemathesis).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, Field

from mlcycle.schemas.feedback import FEEDBACK_REFUSALS, FeedbackResponse

REF = "#/components/schemas/{model}"
CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"
OCTET_STREAM = "application/octet-stream"  # accepted, read as Parquet or CSV by its first bytes; not documented
UPLOAD_TYPES = (CSV, PARQUET, OCTET_STREAM)


class FieldErrorBody(BaseModel):
    """One reason a record was refused."""

    record: int | None = Field(description="0-based index of the record (or data row of an upload); null: the body.")
    field: str | None = Field(description="The field at fault; null: the record as a whole.")
    rule: str = Field(description="The rule it broke: `missing field`, `unexpected field`, `int_type`, ...")
    message: str


class ErrorBody(BaseModel):
    """Every refusal (4xx) has this body: what is wrong, and for records which record and field."""

    error: str = Field(description="What is wrong with the request, in words.")
    errors: list[FieldErrorBody] = Field(default_factory=list, description="Per broken record and field (422).")
    model: str | None = Field(default=None, description="The tag of the model serving when it was refused.")
    request_id: str | None = None


class ExplainResponse(BaseModel):
    model: str = Field(description="The tag of the model that answered.")
    request_id: str
    units: Literal["log-odds", "softmax margin of the predicted class", "target"] = Field(
        description="log-odds (binary), the predicted class's softmax margin (multiclass), target units (regression)."
    )
    explanations: list[dict[str, Any]] = Field(
        description="Per record: `bias`, `contributions` per field and `margin` (their sum), and the prediction."
    )
    unseen_categories: dict[str, int] = Field(description="Per feature, values never seen in training.")


class BatchResponse(BaseModel):
    model: str = Field(description="The tag of the model that answered.")
    request_id: str
    rows: int = Field(description="Data rows scored.")
    predictions: list[dict[str, Any]] = Field(description="Per row, as /predict answers per record.")
    unseen_categories: dict[str, int] = Field(description="Per feature, values never seen in training.")
    seconds: float = Field(description="Time spent reading, validating and scoring the file.")


class ModelInfo(BaseModel):
    model: str = Field(description="The tag of the model that answers.")
    metrics: dict[str, Any] = Field(description="Its test metrics, as training recorded them.")
    lineage: dict[str, Any] = Field(description="What it was made from: data and schema hashes, config, seeds, runs.")


class ReloadAnswer(BaseModel):
    model: str = Field(description="The tag of the model serving now.")
    previous: str = Field(description="The tag that served before.")
    changed: bool


class Metadata(BaseModel, extra="allow"):
    """The served model and the service's settings (more fields than listed may be present)."""

    model: str = Field(description="The tag of the model that answers.")
    name: str
    task: str
    status: str | None = Field(description="Its registry status: champion, challenger, rejected or retired.")
    champion: bool = Field(description="Whether it is its name's champion now.")
    warning: str | None = Field(description="Why this model should not be serving, if it should not (a rejected one).")
    schema_: dict[str, Any] = Field(alias="schema", description="The JSON Schema of one request record.")


# Per API route: the refusals it can give, and why.
REFUSALS: dict[str, dict[int, str]] = {
    "/predict": {
        400: "The body is not JSON, or is nested too deep to read.",
        413: "The body is over `serving.max_body_bytes`, or holds more than `serving.max_records` records.",
        422: 'The body is not `{"records": [...]}`, or records break the schema (each one named).',
    },
    "/predict_batch": {
        400: "The file is empty, or cannot be read as CSV or Parquet.",
        413: "The file is over `serving.max_upload_bytes`, or has more than `serving.max_upload_rows` rows.",
        415: "The body is neither CSV nor Parquet (Content-Type).",
        422: "The file has no rows, or rows break the schema (each one named by its 0-based data row).",
    },
    "/reload": {
        400: "A body other than nothing or `{}`.",
        409: "The new champion has another request contract (features schema or task): the service keeps serving "
        "the model it has; restart it to serve the new one.",
    },
    "/model": {400: "A body other than nothing or `{}`."},
}
REFUSALS["/explain"] = {
    **REFUSALS["/predict"],
    413: "The body is over `serving.max_body_bytes`, or holds more than `serving.explain_max_records` records "
    "(fewer than /predict takes: exact SHAP values cost far more than a prediction).",
}
REFUSALS["/feedback"] = {status: why for status, why in FEEDBACK_REFUSALS.items() if status != 401}
KEYED = ("/predict", "/explain", "/predict_batch", "/reload", "/feedback")  # need the API key when one is set
ANSWERS: dict[str, type[BaseModel]] = {
    "/explain": ExplainResponse,
    "/predict_batch": BatchResponse,
    "/model": ModelInfo,
    "/reload": ReloadAnswer,
    "/feedback": FeedbackResponse,
}


def contract_document(spec: dict[str, Any], api_key_required: bool = False,
                      checked_elsewhere: Iterable[str] = ()) -> dict[str, Any]:  # fmt: skip
    """BentoML's OpenAPI document (`spec`, as a dict) corrected to what the service does. `checked_elsewhere`: the
    fields with checks of the schema's own, which the document cannot state (no CSV pattern then)."""
    doc = _nullable(json.loads(json.dumps(spec)))  # a copy, with JSON's keys (BentoML's status codes are ints)
    schemas: dict[str, Any] = doc.setdefault("components", {}).setdefault("schemas", {})
    models: list[type[BaseModel]] = [ErrorBody, *ANSWERS.values(), Metadata]
    for model in models:
        _add_model(schemas, model)
    paths: dict[str, Any] = doc["paths"]
    for route, refusals in REFUSALS.items():
        operation = paths.get(route, {}).get("post")
        if operation is None:
            continue
        responses = {"200": operation["responses"]["200"]}
        if route in ANSWERS:
            responses["200"] = _json_response("Successful Response", ANSWERS[route].__name__)
        if route in KEYED:
            refusals = {**refusals, 401: "An API key is required (`Authorization: Bearer <key>`), or is not valid."}
            if api_key_required:
                operation["security"] = [{"bearer": []}]
        for status, why in sorted(refusals.items()):
            responses[str(status)] = _json_response(why, ErrorBody.__name__)
        responses["500"] = _json_response("A fault of the server (never the request's).", ErrorBody.__name__)
        operation["responses"] = responses
        if route == "/predict_batch":
            csv: dict[str, Any] = {
                "type": "string",
                "description": "A header row naming every field, then 1 or more rows.",
            }
            pattern = upload_pattern(_record_schema(doc), set(checked_elsewhere))
            if pattern:
                csv["pattern"] = pattern
            parquet = {"type": "string", "format": "binary", "description": "A Parquet file with every field."}
            operation["requestBody"] = {
                "required": True,
                "content": {CSV: {"schema": csv}, PARQUET: {"schema": parquet}},
            }
        elif route in ("/reload", "/model"):
            nothing = {"type": "object", "properties": {}, "additionalProperties": False}
            operation["requestBody"] = {"required": False, "content": {"application/json": {"schema": nothing}}}
        else:
            operation["requestBody"]["required"] = True
    paths["/metadata"] = {
        "get": {
            "tags": ["Service APIs"],
            "description": "The served model (tag, registry status, classes, metrics, lineage), the JSON Schema of "
            "a request record and the service's settings. Needs no API key.",
            "operationId": "mlcycle__metadata",
            "responses": {
                "200": _json_response("Successful Response", Metadata.__name__),
                "503": _json_response("The service is starting.", ErrorBody.__name__),
            },
        }
    }
    if api_key_required:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    _drop_unused(doc)
    return _nullable(doc)  # type: ignore[no-any-return]


def _record_schema(doc: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of one record, as the /predict request documents it ({} if there is none)."""
    try:
        request = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        ref = request["properties"]["records"]["items"]["$ref"]
    except KeyError:
        return {}
    return doc["components"]["schemas"].get(ref.rsplit("/", 1)[-1], {})  # type: ignore[no-any-return]


def _json_response(description: str, model: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": REF.format(model=model)}}}}


def _add_model(schemas: dict[str, Any], model: type[BaseModel]) -> None:
    schema = model.model_json_schema(ref_template=REF, by_alias=True)
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema


def _drop_unused(doc: dict[str, Any]) -> None:
    """Remove components nothing refers to any more (BentoML's error and input models)."""
    schemas = doc["components"]["schemas"]
    while True:
        text = repr({k: v for k, v in doc.items() if k != "components"}) + repr(schemas)
        unused = [name for name in schemas if f"'{REF.format(model=name)}'" not in text]
        if not unused:
            return
        for name in unused:
            del schemas[name]


def _nullable(node: Any) -> Any:
    """`anyOf: [X, {type: null}]` (JSON Schema, OpenAPI 3.1) as OpenAPI 3.0's `X` with `nullable: true`."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    options = node.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        node = {key: value for key, value in node.items() if key != "anyOf"}
        if len(rest) == 1 and "$ref" not in rest[0]:
            node = _with_null({**rest[0], **node})
        elif not any("$ref" in option for option in rest):  # a code: text or a number, each nullable
            node = {**node, "anyOf": [_with_null(option) for option in rest]}
        else:  # a reference cannot carry siblings in OpenAPI 3.0: keep the choice, made nullable
            node = {**node, "anyOf": rest, "nullable": True}
    return {key: _nullable(value) for key, value in node.items()}


def _with_null(node: dict[str, Any]) -> dict[str, Any]:
    node = {**node, "nullable": True}
    if "enum" in node and None not in node["enum"]:  # OpenAPI 3.0.3: `nullable` does not widen an enum
        node["enum"] = [*node["enum"], None]
    return node


# What pandas reads as a missing value: a category spelled like one of these would not arrive as itself.
_PANDAS_NA = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
              "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}  # fmt: skip


def upload_pattern(record: dict[str, Any], checked_elsewhere: set[str], max_rows: int = 20) -> str | None:
    """A regular expression for CSV uploads that validate, from the JSON Schema of one record: a header row with
    every field, then 1 to `max_rows` rows of values each field accepts (every category, integers of the allowed
    range, numbers as whole values within it, empty for a nullable field). None when a field has rules a pattern
    cannot state (`checked_elsewhere`: the schema's own checks; a text pattern)."""
    cells = []
    required = set(record.get("required", []))
    fields = {name: prop for name, prop in record.get("properties", {}).items() if name in required}  # no ignored
    for name, prop in fields.items():
        if name in checked_elsewhere or "pattern" in prop or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            return None
        cell = _cell_pattern(prop)
        if cell is None:
            return None
        nullable = prop.get("nullable") or any(o.get("nullable") for o in prop.get("anyOf", []))
        cells.append(f"({cell})?" if nullable else f"({cell})")
    if not cells:
        return None
    header = ",".join(fields)
    return f"^{header}(\\r?\\n{','.join(cells)}){{1,{max_rows}}}(\\r?\\n)?$"


def _cell_pattern(prop: dict[str, Any]) -> str | None:
    if "anyOf" in prop:  # a code: a cell of any of its forms (its text, its number)
        cells = [cell for cell in map(_cell_pattern, prop["anyOf"]) if cell]
        return "|".join(cells) or None
    kind = prop.get("type")
    if "enum" in prop:
        values = [v for v in prop["enum"] if isinstance(v, str) and v not in _PANDAS_NA
                  and not re.fullmatch(r"[-+0-9.eE ]*", v) and not re.search(r'[,"\r\n]', v)]  # fmt: skip
        values += [str(v) for v in prop["enum"] if isinstance(v, int) and not isinstance(v, bool)]
        return "|".join(re.escape(v) for v in values) or None
    if kind in ("integer", "number"):
        low = prop.get("minimum", prop.get("exclusiveMinimum", -999_999))
        high = prop.get("maximum", prop.get("exclusiveMaximum", 999_999))
        # Whole numbers only: a column of them reads as integers, which a number field takes as well.
        low = math.floor(low) + 1 if "exclusiveMinimum" in prop and "minimum" not in prop else math.ceil(low)
        high = math.ceil(high) - 1 if "exclusiveMaximum" in prop and "maximum" not in prop else math.floor(high)
        return integer_pattern(int(low), int(high)) if low <= high else None
    if kind == "boolean":
        return "True|False"
    if kind == "string":
        return "x[a-z]{0,12}"  # free text: a word no reader takes for a number or a missing value
    return None


def integer_pattern(low: int, high: int) -> str:
    """A regular expression for the integers from `low` to `high` (no sign for positives, no leading zeros)."""
    parts = []
    if low < 0:
        parts.append("-(" + integer_pattern(max(1, -high), -low) + ")")
    low = max(low, 0)
    for digits in range(len(str(low)), len(str(high)) + 1) if low <= high else ():
        start, end = max(low, 10 ** (digits - 1) if digits > 1 else 0), min(high, 10**digits - 1)
        if start <= end:
            parts += _same_length(str(start), str(end))
    return "|".join(parts)


def _same_length(low: str, high: str) -> list[str]:
    """Patterns covering every number from `low` to `high`, both written with the same number of digits."""
    if low == high:
        return [low]
    if set(low) == {"0"} and set(high) == {"9"}:
        return [f"[0-9]{{{len(low)}}}"]
    if len(low) == 1:
        return [f"[{low}-{high}]"]
    if low[0] == high[0]:
        return [low[0] + p for p in _same_length(low[1:], high[1:])]
    rest = len(low) - 1
    out = [low[0] + p for p in _same_length(low[1:], "9" * rest)]
    if int(high[0]) - int(low[0]) > 1:
        first, last = int(low[0]) + 1, int(high[0]) - 1
        out.append((str(first) if first == last else f"[{first}-{last}]") + f"[0-9]{{{rest}}}")
    out += [high[0] + p for p in _same_length("0" * rest, high[1:])]
    return out
