"""Draws -> kernel: blockwise mean, covariance and correlation."""
