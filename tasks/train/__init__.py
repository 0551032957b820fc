"""Train: split without leakage, tune XGBoost with Ray Tune, fit the final model, evaluate it next to reference
models, and report. Kept light on import: Ray's trial workers import `tasks.train.preload` as they start."""
