"""Distill's own package: the pipeline, its domain, the ports and their adapters (docs/architecture.md)."""
