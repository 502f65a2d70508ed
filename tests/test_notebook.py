"""colab/quickstart.ipynb runs top to bottom (on a small budget)."""

import os

import nbformat
from nbclient import NotebookClient

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_notebook_runs(tmp_path):
  notebook = nbformat.read(os.path.join(REPO, "colab", "quickstart.ipynb"), as_version=4)
  parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
  assert len(parameters) == 1
  parameters[0].source = f"TOTAL_ENV_STEPS = 400_000\nWORKDIR = {str(tmp_path / 'quickstart')!r}"
  client = NotebookClient(
    notebook,
    timeout=600,
    kernel_name="python3",
    resources={"metadata": {"path": os.path.join(REPO, "colab")}},
  )
  client.execute()
  outputs = "".join(
    output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", [])
  )
  assert "final true return:" in outputs
  assert os.path.exists(tmp_path / "quickstart" / "metrics.jsonl")
  assert any(
    "image/png" in output.get("data", {})
    for cell in notebook.cells
    for output in cell.get("outputs", [])
  )
