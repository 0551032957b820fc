"""The contract of POST /feedback: labels for earlier answers, by request id and record, and what the service says.

Strict JSON types, as the OpenAPI document states: `request_id` a string, `record` an integer, `label` a number, a
string or a boolean; no other fields. Which labels a model takes (numbers for regression; a class name, 0/1 or
true/false for binary) and whether the request id is known are checked by the service after this model
(tasks/monitor/labels.py), with the refusals listed in `FEEDBACK_REFUSALS`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

FEEDBACK_EXAMPLE = {"labels": [{"request_id": "3f2b9c0e5d7a4b1f8e6d2c4a9b0f1e3d", "record": 0, "label": 231}]}


class FeedbackLabel(BaseModel):
    """The outcome of one served record."""

    model_config = ConfigDict(extra="forbid")

    request_id: StrictStr = Field(
        min_length=1, max_length=64, description="The `request_id` of the answer whose record this labels."
    )
    record: StrictInt = Field(ge=0, description="0-based index of the record in that request.")
    label: StrictBool | StrictInt | StrictFloat | StrictStr = Field(
        description="What really happened: a number (regression), or a class name, 0/1 or false/true (binary)."
    )


class FeedbackRequest(BaseModel):
    """`{"labels": [...]}`: 1 to `feedback.max_labels` labels, all stored or none."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": FEEDBACK_EXAMPLE})

    labels: list[FeedbackLabel] = Field(min_length=1, description="Labels for earlier answers.")


class FeedbackResponse(BaseModel):
    """Every label was taken: how many were new, repeated, or corrected an earlier one."""

    model: str = Field(description="The tag of the model serving when the labels arrived.")
    request_id: str = Field(description="This feedback request's own id.")
    labels: int = Field(description="Labels in the request.")
    accepted: int = Field(description="New labels stored.")
    duplicates: int = Field(description="Labels already recorded with the same value: counted once.")
    corrected: int = Field(
        description="Labels that replaced a different earlier one (`feedback.on_conflict: replace`)."
    )


FEEDBACK_REFUSALS: dict[int, str] = {
    400: "The body is not JSON.",
    401: "An API key is set and the request does not carry it.",
    409: "A label contradicts the one already recorded for that record, or another in the same body "
    "(`feedback.on_conflict: keep_first`); nothing is stored.",
    413: "The body is over `serving.max_body_bytes`, or holds more than `feedback.max_labels` labels.",
    422: 'The body is not `{"labels": [...]}` of the documented fields, or a label names an unknown request id, a '
    "record the request does not have, a value the model's task cannot take, or arrives later than "
    "`feedback.max_delay_h`; each problem is named by the label's index (`record` in the error) and field. "
    "Nothing is stored.",
}
