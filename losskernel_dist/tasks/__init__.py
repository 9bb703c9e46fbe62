"""Ready-made tasks (``module:build`` targets) shipped with the package."""
