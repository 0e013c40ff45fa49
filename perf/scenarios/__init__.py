"""Perf scenarios driven by ``perf/run.py``: each one starts what it measures, runs its same-run baselines
beside it and returns a JSON-able dict (``runs``: one entry per measured run, baselines included)."""
