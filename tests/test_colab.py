"""The quick-start notebook runs top to bottom (in its small mode)."""

import os

import nbformat
from conftest import REPO
from nbclient import NotebookClient


def test_quickstart_notebook_runs(tmp_path, data_dir):
    path = os.path.join(REPO, "colabs", "quickstart.ipynb")
    notebook = nbformat.read(path, as_version=4)
    os.environ.update(
        {
            "VJAX_COLAB_SMALL": "1",
            "VJAX_COLAB_WORKDIR": str(tmp_path / "run"),
            "VJAX_COLAB_DATA_DIR": data_dir,
        }
    )
    try:
        NotebookClient(
            notebook,
            timeout=600,
            kernel_name="python3",
            resources={"metadata": {"path": os.path.join(REPO, "colabs")}},
        ).execute()
    finally:
        for key in ("VJAX_COLAB_SMALL", "VJAX_COLAB_WORKDIR", "VJAX_COLAB_DATA_DIR"):
            os.environ.pop(key)
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs)
    assert "validation top-1:" in text
    assert "'right':" in text  # the clip's class probabilities, by class name
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the training curves and the clip
    assert os.path.isdir(tmp_path / "run" / "checkpoints")
