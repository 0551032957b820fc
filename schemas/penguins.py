"""Palmer penguins: which of three species is a penguin, from its island, sex and body measurements (multiclass).

The CSV ships inside the `palmerpenguins` wheel; `NA` marks a measurement or sex that was not recorded.
"""

from __future__ import annotations

import pandera.pandas as pa
from pandera.typing import Series

SPECIES = ["Adelie", "Chinstrap", "Gentoo"]
ISLAND = ["Biscoe", "Dream", "Torgersen"]
SEX = ["female", "male"]


class PenguinsFeatures(pa.DataFrameModel):
    """One penguin as the service receives it; two birds in the study were never measured (all missing)."""

    island: Series[str] = pa.Field(isin=ISLAND)
    bill_length_mm: Series[float] = pa.Field(ge=20, le=80, nullable=True)
    bill_depth_mm: Series[float] = pa.Field(ge=10, le=30, nullable=True)
    flipper_length_mm: Series[float] = pa.Field(ge=150, le=250, nullable=True)
    body_mass_g: Series[float] = pa.Field(ge=2000, le=7000, nullable=True)
    sex: Series[str] = pa.Field(isin=SEX, nullable=True)
    year: Series[int] = pa.Field(ge=2007, le=2009)

    class Config:
        strict = True
        coerce = True


class PenguinsSchema(PenguinsFeatures):
    """A labelled training row: the species is the target, and its allowed values are the model's classes."""

    species: Series[str] = pa.Field(isin=SPECIES)
