"""SGLD chains in functional form: update, batches, chain runner."""
