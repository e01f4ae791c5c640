"""Drift: a reference profile made at pack time, windows of live rows, statistics at window close."""
