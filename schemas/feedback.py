"""The contract of POST /feedback: labels for earlier answers, by request id and record, and what the service says.

Strict JSON types, as the OpenAPI document states: `request_id` a string, `record` an integer, `label` what the
served model's task takes (`feedback_model`: a number for regression; a class name, 0/1 or true/false for binary; a
class name for multiclass); no other fields. Whether the request id and record exist is checked by the service
after this model (tasks/monitor/labels.py), with the refusals listed in `FEEDBACK_REFUSALS`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, create_model

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

    model_config = ConfigDict(extra="forbid")

    labels: list[FeedbackLabel] = Field(
        min_length=1,
        description="Labels for earlier answers.",
        json_schema_extra={"example": FEEDBACK_EXAMPLE["labels"]},
    )


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


def feedback_model(name: str, task: str, classes: list[str], max_labels: int) -> type[BaseModel]:
    """The request model of one served model: its labels typed as its task takes them, 1 to `max_labels`."""
    label: Any
    if task == "regression":
        label = StrictInt | Annotated[StrictFloat, Field(allow_inf_nan=False)]
        example: Any = 231
    elif task == "binary":
        label = Literal[tuple(classes)] | Literal[0, 1] | StrictBool  # type: ignore[valid-type]
        example = classes[-1]
    else:
        label = Literal[tuple(classes)]  # type: ignore[valid-type]
        example = classes[0]
    title = "".join(part.capitalize() for part in name.replace("-", "_").split("_"))
    item = create_model(  # type: ignore[call-overload]
        f"{title}FeedbackLabel", __base__=FeedbackLabel,
        label=(label, Field(description=FeedbackLabel.model_fields["label"].description)),
    )  # fmt: skip
    sample = {"labels": [{**FEEDBACK_EXAMPLE["labels"][0], "label": example}]}
    return create_model(  # type: ignore[call-overload, no-any-return]
        f"{title}FeedbackRequest", __base__=FeedbackRequest, __doc__=FeedbackRequest.__doc__,
        labels=(list[item], Field(min_length=1, max_length=max_labels,  # type: ignore[valid-type]
                                  description=f"1 to {max_labels} labels for earlier answers.",
                                  json_schema_extra={"example": sample["labels"]})),
    )  # fmt: skip


FEEDBACK_REFUSALS: dict[int, str] = {
    400: "The body is not JSON.",
    404: "A label names a request id the request log does not hold (never answered, not sampled, or older than the "
    "log keeps), or a record its request does not have; each named by the label's index (`record` in the error). "
    "Nothing is stored.",
    409: "A label contradicts the one already recorded for that record, or another in the same body "
    "(`feedback.on_conflict: keep_first`); nothing is stored.",
    413: "The body is over `serving.max_body_bytes`, or holds more than `feedback.max_labels` labels.",
    422: 'The body is not `{"labels": [...]}` of the documented fields and types, or a label arrives later than '
    "`feedback.max_delay_h` after its prediction; each problem named by the label's index (`record` in the error) "
    "and field. Nothing is stored.",
}
