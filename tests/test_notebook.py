"""notebooks/spam_trends.ipynb runs top to bottom and draws every chart of triage.plots.

It is executed in a copy, with its history built by the scan in a temporary directory, so
neither the notebook in the repository nor samples/.state changes.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest

from triage import plots

if os.environ.get("CI") == "true":  # the dev extra has them: CI must run this test
    import nbclient
    import nbformat
else:
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "spam_trends.ipynb"
PNG = b"\x89PNG\r\n\x1a\n"


def test_committed_notebook_has_no_outputs() -> None:
    """Outputs are made by running it; kept out of git so diffs show only the code."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_notebook_runs_and_draws_every_chart(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    before = NOTEBOOK.read_bytes()
    copy = tmp_path / NOTEBOOK.name
    shutil.copyfile(NOTEBOOK, copy)
    state = tmp_path / "state"
    # The kernel inherits the environment: a headless backend, the samples, a fresh history.
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TRIAGE_SAMPLES", str(ROOT / "samples"))
    monkeypatch.setenv("TRIAGE_STATE_DIR", str(state))
    nb = nbformat.read(copy, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first cell that fails

    assert (state / "state.json").is_file(), "the notebook did not build the missing history"
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    by_tag = {t: c for c in nb.cells for t in c.metadata.get("tags", [])}
    for chart in plots.CHARTS:
        cell = by_tag.get(f"chart:{chart.name}")
        assert cell is not None, f"no cell tagged chart:{chart.name}"
        images = [o["data"]["image/png"] for o in cell.outputs if "image/png" in o.get("data", {})]
        assert len(images) == 1, f"chart {chart.name}: {len(images)} images"
        raw = base64.b64decode(images[0])
        assert raw.startswith(PNG) and len(raw) > 10_000, chart.name
    assert NOTEBOOK.read_bytes() == before
