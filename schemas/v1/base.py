"""Version 1 contracts: the base model and the id and integer types every contract uses.

Each model carries ``version``; within a version fields are only ever added, with defaults. A
breaking change is a new model with the next version. ``make schemas`` exports them as JSON Schema
into ``schemas/json/``, and a test fails when the committed files drift from these models.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from schemas.subjects import ANY_STREAM_ID_PATTERN

DATASET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
CYCLE_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,128}$"  # <stream>-<start ms>, or <dataset>.<file key>
ALERT_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,160}$"  # <stream>.<rule>.<n>
StreamId = Annotated[
    str,
    Field(
        pattern=ANY_STREAM_ID_PATTERN,
        description="Stream id: letters, digits, '_' or '-', at most 64 characters; at a "
        "central VerTac a site's stream is '<site>.<stream id>'.",
        examples=["press-01"],
    ),
]
# no spaces, commas, '=', control characters, nor invisible format characters (zero-width
# spaces and joiners, bidirectional overrides, the byte order mark, soft hyphens)
SENSOR_ID_PATTERN = (
    r"^[^\s,=\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f"
    r"\ufeff\ufff9-\ufffb]+$"
)
SensorId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        # explicit about the characters JavaScript's \s and Python's \s disagree on
        pattern=SENSOR_ID_PATTERN,
        description="Sensor id, unique within its stream; no spaces, commas, '=', control "
        "or invisible format characters.",
        examples=["pressure_1"],
    ),
]

CycleId = Annotated[
    str,
    Field(
        pattern=CYCLE_ID_PATTERN,
        description="Cycle id: letters, digits, '_', '.' or '-', at most 128 characters.",
        examples=["press-01-1796237287610"],
    ),
]

Int64 = Annotated[
    int,
    Field(ge=-(2**63), le=2**63 - 1, description="A signed 64-bit integer (ns timestamps, seq)."),
]


class Contract(BaseModel):
    """Base of every contract: immutable, unknown fields rejected."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        json_schema_serialization_defaults_required=True,  # what is sent always has them
    )
