"""One module per analysis of ``losskernel analyze``; each registers itself with ``@analysis``.

``registry.load_sections`` imports every module here, so a new analysis is one
new file: a function decorated with ``registry.analysis`` whose parameters name
what it needs, returning a ``section.Section``. Modules whose name starts with
an underscore are not imported.
"""
