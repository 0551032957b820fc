"""Records → a validated DataFrame through the pandera schema itself: the reference path.

The service validates with the request model generated from the same schema (schemas/api.py), which is faster;
this module is what it is held equal to (tests/test_requests_model.py) and what offline checks use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import pandera.pandas as pa

from mlcycle.tasks.ingest.validate import validate_frame


@dataclass(frozen=True)
class RecordError:
    record: int
    field: str | None
    rule: str
    value: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"record": self.record, "field": self.field, "rule": self.rule, "value": self.value}


def check_records(
    records: Any, schema: type[pa.DataFrameModel], max_records: int
) -> tuple[pd.DataFrame | None, list[RecordError]]:
    """Validate a JSON list of records against the features schema.

    Returns the validated frame, or None with one error per broken field of each broken record.
    """
    if not isinstance(records, list):
        return None, [RecordError(-1, None, "records must be a JSON list of objects")]
    if not records:
        return None, [RecordError(-1, None, "records is empty")]
    if len(records) > max_records:
        return None, [RecordError(-1, None, f"at most {max_records} records per request, got {len(records)}")]
    expected = list(schema.to_schema().columns)
    errors: list[RecordError] = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            errors.append(RecordError(index, None, "record must be a JSON object"))
            continue
        errors += [RecordError(index, name, "missing field") for name in expected if name not in record]
        errors += [RecordError(index, str(name), "unexpected field") for name in record if name not in expected]
    if errors:
        return None, errors
    frame = pd.DataFrame.from_records(records, columns=expected)
    validated = validate_frame(frame, schema, what="request", whole_frame_errors=False)
    if not validated.quarantine.empty:
        ledger = validated.quarantine.sort_values(["row", "column"], kind="stable")
        return None, [RecordError(int(r.row), r.column, r.check, r.value) for r in ledger.itertuples()]
    return validated.valid, []
