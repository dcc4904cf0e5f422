"""The notebooks run top to bottom in their small mode (``VJAX_COLAB_SMALL=1``), outside Colab
(their install cell does nothing here), each in a fresh kernel."""

import os

import nbformat
import pytest
from conftest import REPO
from nbclient import NotebookClient

NOTEBOOKS = ("quickstart", "finetune_your_videos", "attention_maps", "videomae_pretraining")


def _run(name, work, data_dir, **env):
    """Executes ``colabs/<name>.ipynb`` in small mode with its work folder ``work``; returns
    its text output and the number of images it shows."""
    notebook = nbformat.read(os.path.join(REPO, "colabs", f"{name}.ipynb"), as_version=4)
    with pytest.MonkeyPatch.context() as patch:  # the kernel inherits this environment
        variables = {
            "VJAX_COLAB_SMALL": "1",
            "VJAX_COLAB_WORKDIR": str(work),
            "VJAX_COLAB_DATA_DIR": data_dir,
            "PYTHONPATH": REPO,
            **env,
        }
        for key, value in variables.items():
            patch.setenv(key, value)
        NotebookClient(
            notebook,
            timeout=600,
            kernel_name="python3",
            resources={"metadata": {"path": os.path.join(REPO, "colabs")}},
        ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs)
    images = sum("image/png" in o.get("data", {}) for o in outputs)
    return text, images


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory, data_dir):
    """The quick start's run (its trained demo ViViT serves the attention notebook too)."""
    work = tmp_path_factory.mktemp("quickstart")
    return work, *_run("quickstart", work, data_dir)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_opens_with_what_it_shows_and_installs_only_in_colab(name):
    notebook = nbformat.read(os.path.join(REPO, "colabs", f"{name}.ipynb"), as_version=4)
    intro, install = notebook.cells[0].source, notebook.cells[1].source
    assert "**What it shows:**" in intro and "**What it needs:**" in intro
    assert f"colab.research.google.com/github/vjax/vjax/blob/main/colabs/{name}.ipynb" in intro
    assert 'if "google.colab" in sys.modules' in install and "pip install" in install


def test_quickstart_notebook_runs(quickstart):
    work, text, images = quickstart
    assert "validation top-1:" in text and "macro avg" in text
    assert "'right':" in text  # the clip's class probabilities, by class name
    assert images == 5  # curves, confusion matrix, per-class F1, reliability diagram, the clip
    assert os.path.isdir(work / "vivit" / "checkpoints")


def test_finetune_notebook_runs(tmp_path, data_dir):
    pytest.importorskip("transformers", reason="the notebook converts a transformers VideoMAE")
    pytest.importorskip("torch", reason="the notebook converts a transformers VideoMAE")
    text, images = _run("finetune_your_videos", tmp_path, data_dir)
    assert "{'left': 10, 'right': 10}" in text  # the example folder, made here
    assert "Initialised from" in text and "videomae" in text  # the converted weights
    assert "train: kept 16" in text  # 80% of each class
    assert "macro avg" in text and images == 3
    predicted = text.split("$ vjax predict")[-1]
    assert "new_clip.mp4" in predicted and "left" in predicted and "right" in predicted


def test_attention_notebook_runs(quickstart, tmp_path, data_dir):
    trained = str(quickstart[0] / "vivit")
    text, images = _run("attention_maps", tmp_path, data_dir, VJAX_COLAB_DEMO_RUN=trained)
    assert not (tmp_path / "vivit").exists()  # the quick start's model, not trained again
    assert "of the attention on the object" in text
    assert images == 4 + 1  # four clips with their rollout, the temporal attention plot


def test_videomae_pretraining_notebook_runs(tmp_path, data_dir):
    text, images = _run("videomae_pretraining", tmp_path, data_dir)
    assert "validation reconstruction loss:" in text
    assert "fine-tuned on 6 labelled clips: validation top-1" in text and "from scratch" in text
    assert images == 2  # the loss curve and the reconstructions
    assert {"pretrain", "finetune", "scratch"} <= set(os.listdir(tmp_path))
