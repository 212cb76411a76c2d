"""The pipeline's steps, one module per trigger and named like it (`functions/<step>.py` calls
`shared/pipeline/<step>.py`): ingest, label, aggregate, run_events, status, dead_letters; and what they share:
budget, cancel, messages, telemetry."""
