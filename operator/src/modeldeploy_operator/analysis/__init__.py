"""Metric sources for rollout analysis (built-in scrape, Prometheus) behind one small interface."""
