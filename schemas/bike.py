"""UCI Bike Sharing, hourly: the schema of a serving request and of a training row."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

SEASON = ["spring", "summer", "fall", "winter"]
HOURS = ["12am", *(f"{h}am" for h in range(1, 12)), "12pm", *(f"{h}pm" for h in range(1, 12))]
YES_NO = ["No", "Yes"]
WEEKDAY = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
WEATHER = ["Clear", "Mist", "Light Rain", "Heavy Rain"]


class BikeFeatures(pa.DataFrameModel):
    """One hour of one day as the service receives it; weekday and weather are sometimes unrecorded."""

    dteday: Series[str] = pa.Field(str_matches=r"^\d{4}-\d{2}-\d{2}$")
    season: Series[str] = pa.Field(isin=SEASON)
    hr: Series[str] = pa.Field(isin=HOURS)
    holiday: Series[str] = pa.Field(isin=YES_NO)
    weekday: Series[str] = pa.Field(isin=WEEKDAY, nullable=True)
    workingday: Series[str] = pa.Field(isin=YES_NO)
    weathersit: Series[str] = pa.Field(isin=WEATHER, nullable=True)
    temp: Series[float] = pa.Field(ge=-40, le=60, description="degrees Celsius")
    atemp: Series[float] = pa.Field(ge=-40, le=70, description="felt temperature, degrees Celsius")
    hum: Series[float] = pa.Field(ge=0, le=100, description="relative humidity, percent")
    windspeed: Series[float] = pa.Field(ge=0, le=120, description="km/h")

    @pa.check("dteday")
    @classmethod
    def is_calendar_date(cls, series: Series[str]) -> Series[bool]:
        return pd.to_datetime(series, format="%Y-%m-%d", errors="coerce").notna()

    class Config:
        strict = True
        coerce = True


class BikeSchema(BikeFeatures):
    """A labelled training row: `casual` + `registered` = `cnt`, so neither may ever be a feature."""

    casual: Series[int] = pa.Field(ge=0)
    registered: Series[int] = pa.Field(ge=0)
    cnt: Series[int] = pa.Field(ge=0)
