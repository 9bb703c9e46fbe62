"""Example user tasks (see docs/byom_text.md)."""
