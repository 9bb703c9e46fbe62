"""Whether torchvision imports here: the Inception-v1 tests run only in ``.venv-vision``."""

from __future__ import annotations

import pytest


def torchvision_problem() -> str:
    """Why torchvision does not import here, or '' when it does."""
    try:
        import torchvision  # noqa: F401
    except Exception as exc:  # ImportError, or a torchvision built against another torch
        return f"torchvision does not import here ({type(exc).__name__}: {exc})"
    return ""


def requires_torchvision(test_file: str) -> list[pytest.MarkDecorator]:
    """Module-level marks (``pytestmark = ...``) for tests that need torchvision.

    The ``vision`` marker (scripts/test.sh runs ``-m vision`` in .venv-vision and
    deselects them elsewhere), and a skip naming how to run them where torchvision
    does not import.
    """
    why = torchvision_problem()
    return [pytest.mark.vision, pytest.mark.skipif(
        bool(why), reason=f"{why}; run with .venv-vision/bin/python -m pytest {test_file}"
    )]
