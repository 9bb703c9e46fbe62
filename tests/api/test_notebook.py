"""examples/quickstart.ipynb runs, top to bottom, on the tiny demo and shows what it says.

It is executed as a user would: by a Jupyter kernel (the ``python3`` kernel of the
interpreter running the tests, so the venv's packages), from the notebook's own
folder, with ``LOSSKERNEL_QUICKSTART_SMALL=1`` and the run directory under tmp_path.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbclient
import nbformat
import numpy as np
import pytest

import losskernel_dist as lk

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "examples" / "quickstart.ipynb"


def _text(cell) -> str:
    out = []
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            out.append(o["text"])
        elif "data" in o:
            out.append(o["data"].get("text/plain", ""))
    return "".join(out)


def _images(cell) -> int:
    return sum("image/png" in o.get("data", {}) for o in cell.get("outputs", []))


@pytest.mark.slow
def test_quickstart_notebook_runs_the_small_demo(tmp_path, monkeypatch):
    out = tmp_path / "quickstart"
    monkeypatch.setenv("LOSSKERNEL_QUICKSTART_SMALL", "1")
    monkeypatch.setenv("LOSSKERNEL_QUICKSTART_OUTPUT", str(out))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        "commit the notebook without outputs"
    # not saved: the kernel must be this interpreter (the venv), not another python3
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print('kernel:', sys.executable)"))
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=600,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not [o for c in code for o in c.outputs if o["output_type"] == "error"]
    text = "\n".join(_text(c) for c in code)
    assert f"kernel: {sys.executable}" in text

    assert f"small run in {out}" in text
    assert "2 chains x 10 draws, N = 200" in text
    assert "20 of 20 draws done" in text
    # the kernel: its xarray repr, the first rows and the heatmap
    assert "<xarray.DataArray 'corr' (sample_i: 200, sample_j: 200)>" in text
    assert "first rows of rho (5 x 5):" in text
    assert sum(_images(c) for c in code) >= 2  # heatmap and UMAP map, inline
    # the neighbour table: four samples, five neighbours each, the values of rho
    run = lk.open_run(out)
    rho = run.kernel("corr").values
    blocks = re.findall(r"neighbours of sample (\d+) \(.*\):\n((?:    .*\n){5})", text)
    assert len(blocks) == 4
    for i, lines in blocks:
        i = int(i)
        rows = [line.split() for line in lines.splitlines()]
        js = [int(r[0]) for r in rows]
        shown = [float(r[-1]) for r in rows]
        assert i not in js
        np.testing.assert_allclose(shown, rho[i, js], atol=5e-4)
        others = np.delete(rho[i], i)
        assert shown[0] == pytest.approx(others.max(), abs=5e-4)
    # the numbers are the run's own, which the notebook left in OUTPUT with its report
    assert f"pc1_auc: {run.metrics['summary']['pc1_auc']}" in text
    assert run.report_path.is_file()
    assert run.rundir.open_store().read_embedding("umap_2d").shape == (200, 2)
