"""UCI Adult census income: the schema of a serving request and of a training row."""

from __future__ import annotations

import pandera.pandas as pa
from pandera.typing import Series

WORKCLASS = ["Federal-gov", "Local-gov", "Never-worked", "Private", "Self-emp-inc", "Self-emp-not-inc",
             "State-gov", "Without-pay"]  # fmt: skip
EDUCATION = ["10th", "11th", "12th", "1st-4th", "5th-6th", "7th-8th", "9th", "Assoc-acdm", "Assoc-voc",
             "Bachelors", "Doctorate", "HS-grad", "Masters", "Preschool", "Prof-school", "Some-college"]  # fmt: skip
MARITAL_STATUS = ["Divorced", "Married-AF-spouse", "Married-civ-spouse", "Married-spouse-absent",
                  "Never-married", "Separated", "Widowed"]  # fmt: skip
OCCUPATION = ["Adm-clerical", "Armed-Forces", "Craft-repair", "Exec-managerial", "Farming-fishing",
              "Handlers-cleaners", "Machine-op-inspct", "Other-service", "Priv-house-serv", "Prof-specialty",
              "Protective-serv", "Sales", "Tech-support", "Transport-moving"]  # fmt: skip
RELATIONSHIP = ["Husband", "Not-in-family", "Other-relative", "Own-child", "Unmarried", "Wife"]
RACE = ["Amer-Indian-Eskimo", "Asian-Pac-Islander", "Black", "Other", "White"]
SEX = ["Female", "Male"]
NATIVE_COUNTRY = ["Cambodia", "Canada", "China", "Columbia", "Cuba", "Dominican-Republic", "Ecuador",
                  "El-Salvador", "England", "France", "Germany", "Greece", "Guatemala", "Haiti",
                  "Holand-Netherlands", "Honduras", "Hong", "Hungary", "India", "Iran", "Ireland", "Italy",
                  "Jamaica", "Japan", "Laos", "Mexico", "Nicaragua", "Outlying-US(Guam-USVI-etc)", "Peru",
                  "Philippines", "Poland", "Portugal", "Puerto-Rico", "Scotland", "South", "Taiwan",
                  "Thailand", "Trinadad&Tobago", "United-States", "Vietnam", "Yugoslavia"]  # fmt: skip
INCOME = ["<=50K", ">50K"]


class AdultFeatures(pa.DataFrameModel):
    """One person as the service receives them; the census marks unknown work and origin as missing."""

    age: Series[int] = pa.Field(ge=16, le=100)
    workclass: Series[str] = pa.Field(isin=WORKCLASS, nullable=True)
    fnlwgt: Series[int] = pa.Field(ge=1, le=10_000_000)
    education: Series[str] = pa.Field(isin=EDUCATION)
    education_num: Series[int] = pa.Field(ge=1, le=16)
    marital_status: Series[str] = pa.Field(isin=MARITAL_STATUS)
    occupation: Series[str] = pa.Field(isin=OCCUPATION, nullable=True)
    relationship: Series[str] = pa.Field(isin=RELATIONSHIP)
    race: Series[str] = pa.Field(isin=RACE)
    sex: Series[str] = pa.Field(isin=SEX)
    capital_gain: Series[int] = pa.Field(ge=0, le=99_999)
    capital_loss: Series[int] = pa.Field(ge=0, le=99_999)
    hours_per_week: Series[int] = pa.Field(ge=1, le=99)
    native_country: Series[str] = pa.Field(isin=NATIVE_COUNTRY, nullable=True)

    class Config:
        strict = True
        coerce = True


class AdultSchema(AdultFeatures):
    """A labelled training row."""

    income: Series[str] = pa.Field(isin=INCOME)
