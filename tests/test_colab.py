"""The notebooks run top to bottom (in their small mode)."""

import os

import nbformat
from conftest import REPO
from nbclient import NotebookClient


def _execute(name: str, tmp_path, data_dir) -> list[dict]:
    """Runs ``colabs/NAME`` in its small mode (workdir under ``tmp_path``); its outputs."""
    path = os.path.join(REPO, "colabs", name)
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
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]


def test_quickstart_notebook_runs(tmp_path, data_dir):
    outputs = _execute("quickstart.ipynb", tmp_path, data_dir)
    text = "".join(o.get("text", "") for o in outputs)
    assert "validation top-1:" in text
    assert "'right':" in text  # the clip's class probabilities, by class name
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the training curves and the clip
    assert os.path.isdir(tmp_path / "run" / "checkpoints")


def test_videomae_pretraining_notebook_runs(tmp_path, data_dir):
    outputs = _execute("videomae_pretraining.ipynb", tmp_path, data_dir)
    text = "".join(o.get("text", "") for o in outputs)
    assert "validation reconstruction loss:" in text
    assert "fine-tuned on 6 labelled clips: validation top-1" in text and "from scratch" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the loss curve and the reconstructions
    assert {"pretrain", "finetune", "scratch"} <= set(os.listdir(tmp_path / "run"))
