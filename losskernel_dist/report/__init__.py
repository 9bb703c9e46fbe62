"""The human-readable output of an analysis: a self-contained HTML report (``html.py``)."""
