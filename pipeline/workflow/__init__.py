"""Workflows: stages with declared inputs, parameters and code version, run in order and skipped when unchanged."""
