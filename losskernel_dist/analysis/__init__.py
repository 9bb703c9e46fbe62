"""Analyses of a reduced run: the paper's numbers and figures."""
