"""Ingest: read a source (files, a landing folder, a SQL table), validate every row against the pandera schema,
quarantine the rows that fail with their reasons, and admit the rest to the curated store by batch."""
