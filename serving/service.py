"""The prediction service: one BentoML service that serves a model bundle from the model store.

`MLCYCLE_MODEL_TAG` names the bundle: a full tag (`adult:abc123`) or a model name for its newest version
(default `adult`). Requests are validated with the dataset's features schema and prepared by the same
preprocessing code that training used; the answer names the model that gave it.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

import bentoml

from schemas import resolve_schema
from serving.requests import check_records
from tasks.bundle import load_bundle
from tasks.validate import SchemaContractError

log = logging.getLogger("mlcycle.serving")


@bentoml.service(name="mlcycle", traffic={"timeout": 30})
class MLCycleService:
    # Read when BentoML imports the service (the service's own entry point), so `bentoml build` can pin it.
    model_ref = bentoml.models.BentoModel(os.environ.get("MLCYCLE_MODEL_TAG", "adult"))

    def __init__(self) -> None:
        self.bundle = load_bundle(str(self.model_ref.tag))
        self.features_schema = resolve_schema(self.bundle.config.features_schema_ref)
        log.info("serving %s", self.bundle.tag)

    @bentoml.api
    def predict(self, records: list[dict[str, Any]], ctx: bentoml.Context) -> dict[str, Any]:
        """Predict for a list of records with the dataset's feature fields."""
        request_id = uuid.uuid4().hex
        try:
            frame, errors = check_records(records, self.features_schema, self.bundle.config.serving.max_records)
        except SchemaContractError as exc:
            frame, errors = None, []
            message = str(exc)
        else:
            message = f"{len({e.record for e in errors})} record(s) failed validation"
        if frame is None:
            ctx.response.status_code = 422
            return {"error": message, "errors": [e.as_dict() for e in errors], "model": self.bundle.tag,
                    "request_id": request_id}  # fmt: skip
        predictions, unseen = self.bundle.predict_records(frame)
        return {"model": self.bundle.tag, "request_id": request_id, "predictions": predictions,
                "unseen_categories": unseen}  # fmt: skip

    @bentoml.api(route="/model")
    def model(self) -> dict[str, Any]:
        """Which model answers, with its test metrics and lineage."""
        return {"model": self.bundle.tag, "metrics": self.bundle.metrics, "lineage": self.bundle.lineage}
