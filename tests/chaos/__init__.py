"""The fault harness: see run.py (``make chaos``)."""
