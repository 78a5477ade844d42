"""Runnel's benchmark: ``python -m bench`` (or ``scripts/bench``); see docs/performance.md."""
