"""The work, one module per stage: ingest → validate → prepare/preprocess → tune → train → evaluate → bundle.

Every function here is plain Python that knows nothing of Prefect; `flows/` wraps them as tasks.
"""
