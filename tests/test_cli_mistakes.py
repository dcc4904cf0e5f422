"""A user's mistake at the command line of ``vjax predict``, ``export``, ``compare``, ``prepare``
and ``bench`` is one line on stderr naming the problem, exit code 2, no traceback, and writes
nothing; the verbs' ``--help`` exits 0. Each runs in this process through the ``vjax`` entry
point (:func:`vjax.cli.main`) on one tiny converted ViViT and its StableHLO export."""

import json
import os
import shutil

import jax
import numpy as np
import pytest
from conftest import DEMO_CONFIG

from vjax.cli import main as vjax_main
from vjax.convert import pretrained_config, save_converted
from vjax.data.video_io import encode_video
from vjax.deploy.export import export_model
from vjax.evaluate.metrics import task_metrics
from vjax.evaluate.report import named_result
from vjax.models import build_model

MODEL = {"name": "vivit", "size": "Ti/8x2", "num_layers": 1, "hidden_size": 32, "num_heads": 2}
NAMES = [f"c{i}" for i in range(5)]
CLIP = (4, 16, 16, 3)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """``{"model": converted checkpoint folder, "export": its StableHLO export, "video": a
    2 s clip, "root": a folder for the cases' inputs}``."""
    root = tmp_path_factory.mktemp("cli_mistakes")
    model = build_model(MODEL, num_classes=len(NAMES))
    init = jax.jit(lambda key: model.init(key, np.zeros((1, *CLIP)), train=False))
    config = pretrained_config(MODEL, CLIP, NAMES, mean=(0.5,) * 3, std=(0.25,) * 3, source="t")
    save_converted(str(root / "model"), config, jax.device_get(init(jax.random.key(0))))
    export_model(str(root / "model"), str(root / "export"), ["stablehlo"])
    frames = np.random.default_rng(0).integers(0, 256, (20, 24, 30, 3), np.uint8)
    video = encode_video(str(root / "clip.mp4"), frames, 10)
    return {"model": str(root / "model"), "export": str(root / "export"), "video": video,
            "root": root}  # fmt: skip


def _listing(path) -> list[str]:
    """Every path under ``path`` (none when it does not exist): what a command wrote."""
    return sorted(str(p) for p in path.rglob("*")) if path.exists() else []


def _one_line_error(argv: list[str], capsys, prefix: str | None = None) -> str:
    """Runs ``vjax ARGV``: exit code 2 and exactly one stderr line, ``PREFIX: ...`` (default
    ``vjax VERB: error: ``); returns that line."""
    code = vjax_main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err[-3000:]
    assert "Traceback" not in err and len(lines) == 1, err[-3000:]
    assert lines[0].startswith(prefix or f"vjax {argv[0]}: error: "), lines
    return lines[0]


# predict's flags: (flag, what the line must name). Refused when the flags are read.
PREDICT_FLAGS = {
    "clips_0": ("--clips=0", "argument --clips: takes a whole number of 1 or more, got '0'"),
    "chunk_size_0": ("--chunk_size=0", "argument --chunk_size: takes a whole number of 1 or"),
    "top_k_0": ("--top_k=0", "argument --top_k: takes a whole number of 1 or more, got '0'"),
    "top_k_negative": ("--top_k=-1", "argument --top_k: takes a whole number of 1 or more"),
    "window_negative": ("--window=-1", "argument --window: takes a number of 0 or more, got '-1'"),
}


@pytest.mark.parametrize("case", PREDICT_FLAGS)
def test_predict_flag_out_of_range_is_one_line(files, capsys, case):
    flag, text = PREDICT_FLAGS[case]
    line = _one_line_error(["predict", f"--model={files['model']}", files["video"], flag], capsys)
    assert text in line and line.endswith("(vjax predict --help lists the flags)")


def test_predict_json_into_a_missing_folder_is_refused_before_inference(files, capsys):
    missing = files["root"] / "no_such_folder"
    argv = ["predict", f"--model={files['export']}", files["video"],
            f"--json={missing / 'out.json'}"]  # fmt: skip
    line = _one_line_error(argv, capsys)
    assert f"argument --json: folder '{missing}' does not exist" in line
    assert not missing.exists()


def test_predict_json_naming_a_video_is_refused_and_the_video_kept(files, capsys):
    """``--json a.mp4 b.mp4``, typed as if --json were a switch: argparse takes a.mp4 as the
    JSON file, which predict then wrote its result over; now refused, the video unchanged.
    A JSON file from an earlier run is still overwritten."""
    video = files["root"] / "a.mp4"
    shutil.copy(files["video"], video)
    before = video.read_bytes()
    argv = ["predict", f"--model={files['export']}", "--json", str(video), files["video"]]
    line = _one_line_error(argv, capsys)
    assert f"argument --json: '{video}' exists and does not hold JSON" in line
    assert video.read_bytes() == before
    earlier = files["root"] / "earlier.json"
    earlier.write_text('{"model": "old"}')
    assert vjax_main(["predict", f"--model={files['export']}", f"--json={earlier}",
                      files["video"]]) == 0  # fmt: skip
    assert json.loads(earlier.read_text())["model"] == files["export"]


# URLs vjax cannot read or write (epath knows gs://, s3://, az://): one line each, not
# epath's KeyError.
OTHER_URLS = {
    "export_out": (["export", "--model={model}", "--out=file:///tmp/vjax_export"], "file://"),
    "predict_json": (["predict", "--model={export}", "{video}", "--json=http://host/p.json"],
                     "http://"),
    "eval_workdir": (["eval", "--workdir=ftp://host/run"], "ftp://"),
}  # fmt: skip


@pytest.mark.parametrize("case", OTHER_URLS)
def test_a_url_vjax_cannot_reach_is_one_line(files, capsys, case):
    argv, scheme = OTHER_URLS[case]
    line = _one_line_error([a.format(**files) for a in argv], capsys)
    assert line.endswith(
        f"vjax reads and writes local paths and buckets (gs://, s3://, az://), not {scheme}"
    ) or line.endswith(f"not {scheme} (vjax predict --help lists the flags)"), line


def test_eval_without_config_of_a_convert_folder_asks_for_the_dataset(files, capsys):
    """A `vjax convert` folder records a model, not a run: there is no dataset to take."""
    line = _one_line_error(["eval", f"--workdir={files['model']}"], capsys)
    assert line == (
        f"vjax eval: error: {files['model']!r} holds a model without the dataset it was trained "
        "on (a `vjax convert` folder): give --config for the data to evaluate it on"
    )


def _broken_export(files, name: str, damage) -> str:
    """A copy of the export with ``damage(folder)`` done to it."""
    folder = files["root"] / name
    if not folder.exists():
        shutil.copytree(files["export"], folder)
        damage(folder)
    return str(folder)


BROKEN_EXPORTS = {
    "model_file_missing": (
        lambda f: os.remove(f / "model.stablehlo"),
        "model.stablehlo is missing (signature.json lists it as the stablehlo export)"),
    "model_file_truncated": (
        lambda f: os.truncate(f / "model.stablehlo", 100),
        "model.stablehlo is not a readable stablehlo model"),
    "signature_not_json": (
        lambda f: (f / "signature.json").write_text("{bad"),
        "signature.json is not readable JSON"),
    "signature_not_a_signature": (
        lambda f: (f / "signature.json").write_text("{}"),
        "signature.json lacks files, input, class_names, sampling: not a vjax export signature"),
}  # fmt: skip


@pytest.mark.parametrize("case", BROKEN_EXPORTS)
def test_predict_on_a_broken_export_names_the_file(files, capsys, case):
    damage, text = BROKEN_EXPORTS[case]
    folder = _broken_export(files, case, damage)
    line = _one_line_error(["predict", f"--model={folder}", files["video"]], capsys)
    assert f"{folder}/{text}" in line and "re-export with vjax export" in line


def test_predict_on_a_folder_with_an_export_and_checkpoints_says_which_it_uses(
    files, capsys, caplog
):
    both = files["root"] / "export_beside_checkpoints"
    if not both.exists():
        shutil.copytree(files["model"], both)
        for name in os.listdir(files["export"]):
            shutil.copy(os.path.join(files["export"], name), both)
    assert vjax_main(["predict", f"--model={both}", files["video"]]) == 0
    assert "Traceback" not in capsys.readouterr().err
    warnings = [r.getMessage() for r in caplog.records if r.name == "vjax.predict"]
    assert warnings == [
        f"{both} holds both an export (signature.json) and checkpoints (newest step 0); using "
        f"the export: give --model={both / 'checkpoints'} for the checkpoints"
    ]


def _export_out(root, case: str):
    """``(--out, the start of the line after "export error: ")`` of each refused --out."""
    if case == "workdir":  # the converted model's folder holds checkpoints/, as a workdir does
        out = root / "model"
        return out, (f"--out='{out}' is a training workdir (it holds checkpoints/); export "
                     f"into a new folder, e.g. --out={out / 'exported'}")  # fmt: skip
    if case == "not_empty":
        (root / "busy").mkdir(exist_ok=True)
        (root / "busy" / "notes.txt").write_text("mine\n")
        out = root / "busy"
        return out, f"--out='{out}' is not empty (it holds notes.txt); export into a new or"
    (root / "a_file.txt").write_text("mine\n")
    out = root / "a_file.txt"
    return out, f"--out='{out}' is a file; give a new folder for the export"


@pytest.mark.parametrize("case", ["workdir", "not_empty", "file"])
def test_export_refuses_an_out_that_is_not_a_new_folder(files, capsys, case):
    out, text = _export_out(files["root"], case)
    before = _listing(out)
    argv = ["export", f"--model={files['model']}", f"--out={out}", "--format=stablehlo"]
    assert _one_line_error(argv, capsys, "export error: ").startswith(f"export error: {text}")
    assert _listing(out) == before
    if case == "file":
        assert out.read_text() == "mine\n"


def _eval_result(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(NAMES), 20)
    result = named_result(task_metrics(rng.normal(size=(20, len(NAMES))), labels, NAMES), NAMES,
                          "test")  # fmt: skip
    return {**result, "step": 3}


@pytest.fixture(scope="module")
def runs(files):
    """Two workdirs, each with an ``eval_test_step3.json``, ``config.json`` and
    ``metrics.jsonl`` as a run has them."""
    out = []
    for seed in (0, 1):
        run = files["root"] / f"run{seed}"
        run.mkdir()
        (run / "eval_test_step3.json").write_text(json.dumps(_eval_result(seed)))
        (run / "config.json").write_text(json.dumps({"model": MODEL, "train": {"num_steps": 3}}))
        (run / "metrics.jsonl").write_text('{"step": 1, "loss": 1.6}\n{"step": 2, "loss": 1.5}\n')
        out.append(run)
    return out


@pytest.mark.parametrize(
    ("name", "text"),
    [("config.json", "is not an eval result (no split and loss)"),
     ("metrics.jsonl", "is not an eval result: not one JSON object (Extra data")],
)  # fmt: skip
def test_compare_with_a_file_that_is_not_an_eval_result(runs, capsys, name, text):
    a, b = runs
    line = _one_line_error(["compare", str(a), str(b / name)], capsys)
    assert f"{b / name} {text}" in line and "eval_<split>_step<N>.json" in line
    assert not (b / "compare_test.png").exists()


def test_compare_out_into_a_missing_folder(runs, capsys):
    a, b = runs
    missing = b / "no_such_folder"
    line = _one_line_error(["compare", str(a), str(b), f"--out={missing / 'cmp.png'}"], capsys)
    assert f"argument --out: folder '{missing}' does not exist" in line
    assert not missing.exists()


def test_prepare_without_src_names_it(files, capsys):
    data_dir = files["root"] / "tfds"
    argv = ["prepare", "video_folder", f"--data_dir={data_dir}", "--fps=10"]
    line = _one_line_error(argv, capsys)
    assert "video_folder needs --src=..." in line
    assert not data_dir.exists()


@pytest.mark.parametrize("verb", ["prepare", "train"])
def test_a_data_dir_in_a_bucket_says_to_mount_it(verb, tmp_path, capsys):
    """ArrayRecord opens local paths only: before, "RuntimeError: open() failed" after set-up."""
    if verb == "prepare":
        argv = ["prepare", "vjax_motion", "--data_dir=gs://my-bucket/tfds"]
    else:
        argv = ["train", f"--workdir={tmp_path / 'run'}", f"--config={DEMO_CONFIG}:tiny",
                "--config.dataset.data_dir=gs://my-bucket/tfds"]  # fmt: skip
    line = _one_line_error(argv, capsys)
    assert line.endswith(
        "dataset.data_dir 'gs://my-bucket/tfds' is in a bucket, and ArrayRecord, the format "
        "datasets are prepared in, opens local paths only: mount the bucket on every host "
        "(gcsfuse --implicit-dirs my-bucket /mnt/my-bucket) and give its path instead, "
        "/mnt/my-bucket/tfds"
    )
    assert not (tmp_path / "run").exists()


# Flag mistakes of the verbs whose parsers printed argparse's usage block before its line.
FLAG_MISTAKES = [
    (["train", "--foo", "--workdir=x"], "unrecognized arguments: --foo"),
    (["train"], "the following arguments are required: --workdir"),
    (["eval", "--workdir=x", "--split"], "argument --split: expected one argument"),
    (["train", "--workdir=x", "--num_processes=abc"], "argument --num_processes: invalid int"),
    (["parity", "bogus"], "invalid choice: 'bogus'"),
    (["convert", "--from=caffe", "--src=x", "--out=y"], "invalid choice: 'caffe'"),
    (
        ["convert", "--from=hf", "--src=x", "--out=y", "--frame_stride=0"],
        "argument --frame_stride: takes a number in (0, inf), got '0'",
    ),
    (["quantize", "--model=x", "--out=y", "--mode=bogus"], "invalid choice: 'bogus'"),
    (["bench", "train", "--foo"], "unrecognized arguments: --foo"),
    (["bench", "infer", "--foo"], "unrecognized arguments: --foo"),
    (["bench", "data", "--foo"], "unrecognized arguments: --foo"),
    (["bench", "ssl", "--foo"], "unrecognized arguments: --foo"),
    (["bench", "ssl", "--head_steps=-1"], "argument --head_steps: takes a whole number of 0 or"),
    # bench numbers that ran with a default (--batch=0: 8), ended in a StatisticsError, or
    # wrote a table of zeros / a failed row into BENCHMARKS.md
    (["bench", "train", "--batch=0"], "argument --batch: takes a whole number of 1 or more"),
    (["bench", "train", "--steps=0"], "argument --steps: takes a whole number of 1 or more"),
    (["bench", "infer", "--batch=0"], "argument --batch: takes a whole number of 1 or more"),
    (["bench", "infer", "--repeats=0"], "argument --repeats: takes a whole number of 1 or more"),
    (["bench", "data", "--seconds=0"], "argument --seconds: takes a number in (0, inf), got '0'"),
    (["bench", "data", "--fps=0"], "argument --fps: takes a whole number of 1 or more"),
    # the table's file, checked before the benchmark runs (it failed after)
    (["bench", "infer", "--out=no_folder/B.md"], "argument --out: folder '"),
    (["bench", "train", "--out=gs://b/B.md"], "argument --out: 'gs://b/B.md': give a local file"),
    # an empty path (a shell variable unset) named the working directory, or wrote into it
    (["predict", "--model=", "clip.mp4"], "argument --model: is empty; give a path"),
    (["export", "--model=m", "--out="], "argument --out: is empty; give a path"),
    (["quantize", "--model=", "--out=q", "--mode=int8_weights"], "argument --model: is empty"),
    (["prune", "--model=m", "--out= ", "--ratio=0.5"], "argument --out: is empty"),
    (["convert", "--from=hf", "--src=", "--out=y"], "argument --src: is empty"),
    (["compare", "", "b"], "argument run_a: is empty"),
    (["predict", "--model=m", "clip.mp4", "--json="], "argument --json: is empty"),
]


@pytest.mark.parametrize(
    ("argv", "text"), FLAG_MISTAKES, ids=lambda v: "_".join(v)[:40] if isinstance(v, list) else ""
)
def test_a_flag_mistake_is_one_line_naming_it_and_where_the_flags_are_listed(
    capsys, tmp_path, monkeypatch, argv, text
):
    monkeypatch.chdir(tmp_path)
    prog = " ".join(argv[:2] if argv[0] == "bench" else argv[:1])
    line = _one_line_error(argv, capsys, prefix=f"vjax {prog}: error: "
                           if argv[0] != "bench" else "vjax bench: error: ")  # fmt: skip
    assert text in line and line.endswith(f"(vjax {prog} --help lists the flags)"), line
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize(
    ("flags", "text"),
    [(["--coordinator_address=localhost:45677", "--num_processes=2", "--process_id=2"],
      "process id 2 of 2 processes"),
     (["--coordinator_address=localhost:45677", "--num_processes=0", "--process_id=0"],
      "process id 0 of 0 processes"),
     (["--coordinator_address=nohost", "--num_processes=1", "--process_id=0"],
      "coordinator address 'nohost' is not HOST:PORT")],
)  # fmt: skip
def test_a_multi_process_flag_out_of_range_is_one_line(capsys, tmp_path, flags, text):
    """JAX refused these with a traceback (an IndexError for an address without a port)."""
    argv = ["train", f"--workdir={tmp_path / 'run'}", f"--config={DEMO_CONFIG}", *flags]
    assert text in _one_line_error(argv, capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [("def get_config(:\n", "config file 'mine.py' does not run: SyntaxError: invalid syntax"),
     ("def get_config(arg):\n    return {}['lr']\n",
      "--config=mine.py: get_config failed: KeyError: 'lr'"),
     # these were tracebacks (AttributeError) from wherever the run first read the config
     ("def get_config(arg):\n    return None\n",
      "--config=mine.py: get_config returned NoneType, not an ml_collections.ConfigDict"),
     ("import ml_collections\nfrom vjax.config_utils import load_config\n"
      "def get_config(arg):\n    c = load_config('configs/demo.py:tiny').to_dict()\n"
      "    del c['seed'], c['sharding']\n    return ml_collections.ConfigDict(c)\n",
      "--config=mine.py lacks 'seed', 'sharding': every config has seed, dataset, input, model"),
     ("def get_config():\n    return None\n",  # ml_collections' usual signature: called
      "--config=mine.py: get_config returned NoneType")],
)  # fmt: skip
def test_a_config_file_of_the_users_that_fails_is_one_line(capsys, tmp_path, monkeypatch,
                                                           text, message):  # fmt: skip
    """A user's own config file with a syntax error, or whose get_config raises, is their
    mistake: one line naming the file and the error, not a traceback (--debug has it)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.py").write_text(text)
    line = _one_line_error(["train", "--workdir=run", "--config=mine.py"], capsys)
    assert message in line and not (tmp_path / "run").exists(), line


@pytest.mark.parametrize(
    ("argv", "text"),
    [(["prepare", "video_folder", "--srcc=/x"], "unknown flag --srcc; did you mean --src"),
     (["demo", "--workdir=run", "--config=configs/demo.py:bogus"],
      "--config=configs/demo.py:bogus: unknown demo variant(s) ['bogus']"),
     (["train", "--workdir=run", "--config=configs/videos.py:/nonexistent"],
      "the videos' src '/nonexistent' does not exist"),
     # a recipe of videos on disk named the builder's own field ("video_folder needs src=")
     (["train", "--workdir=run", "--config=configs/conv3d.py:r2plus1d_18_ucf101"],
      "dataset 'ucf101' is prepared from its videos on disk: give their folder (or a manifest) "
      "with --config.dataset.src=PATH"),
     # the demo joined its variant to another recipe's: "unknown recipe 'vivit,r2plus1d_18_k400'"
     (["demo", "--workdir=run", "--config=configs/conv3d.py:r2plus1d_18_k400"],
      "vjax demo trains configs/demo.py's variant 'vivit' (--config only adds variants to it, "
      "e.g. configs/demo.py:tiny), which configs/conv3d.py lacks")],
)  # fmt: skip
def test_a_mistake_is_named_as_the_user_typed_it(capsys, tmp_path, monkeypatch, argv, text):
    """The lines named what the user never typed: 'dataset.srcc' for prepare's --srcc, the
    demo's joined spec 'demo.py:vivit,bogus', and --src for a config's dataset.src."""
    monkeypatch.chdir(tmp_path)
    assert text in _one_line_error(argv, capsys)
    assert not (tmp_path / "run").exists()


def test_bench_help_exits_0(capsys):
    assert vjax_main(["bench", "--help"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("``vjax bench KIND [flags]``") and not out.err


@pytest.mark.parametrize(
    ("argv", "texts"),
    [(["bench", "distill", "--help"], ["(default: 1.0)", "--seeds SEEDS", "(default: 3)"]),
     (["bench", "prune", "--help"], ["share of each kind of unit removed (default: 0.5)"]),
     (["prepare", "--help"], ["--beam_runner=FlinkRunner \\\n"]),
     (["parity", "--help"], ["(vivit, video_transformers, conv3d or mbt)"])],
)  # fmt: skip
def test_help_says_each_default_and_keeps_its_examples_whole(capsys, argv, texts):
    """What a --help showed wrong: no defaults for the bench's numbers, a prepare example's
    line continuation eaten by the docstring, parity naming two of its four families."""
    try:
        code = vjax_main(argv)
    except SystemExit as e:  # argparse's --help exits
        code = e.code
    assert code == 0
    out = " ".join(capsys.readouterr().out.split(" "))
    for text in texts:
        assert text in out, out


def test_main_module_help_says_its_whole_usage_line():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "vjax.main", "--help"], capture_output=True,
                            text=True, check=True)  # fmt: skip
    assert "MODE one of train, eval, probe, demo." in result.stdout


def test_prepare_help_of_a_dataset_lists_its_flags_and_exits_0(capsys):
    assert vjax_main(["prepare", "video_folder", "--help"]) == 0
    out = capsys.readouterr()
    assert "vjax prepare video_folder flags:" in out.out and "  --src=...  (required)" in out.out
    assert "  --fps=0.0" in out.out and not out.err


@pytest.mark.parametrize(
    ("argv", "text"),
    [(["bench", "trian"], "unknown bench kind 'trian'; valid: data, train, infer, ssl"),
     (["bench"], "no bench kind given; valid: data, train, infer, ssl")],
)  # fmt: skip
def test_bench_without_a_known_kind_lists_the_kinds(capsys, argv, text):
    assert text in _one_line_error(argv, capsys)


def test_quantize_without_its_optional_extra_says_how_to_install_it(capsys, monkeypatch):
    """``vjax quantize`` without the deploy extra was qwix's ModuleNotFoundError traceback: a
    missing optional extra is one line naming the module and the pip command, exit 2."""
    import sys

    monkeypatch.delitem(sys.modules, "vjax.deploy.quantize", raising=False)
    monkeypatch.setitem(sys.modules, "qwix", None)  # None: Python's "cannot be imported"
    assert vjax_main(["quantize", "--model=m", "--out=o"]) == 2
    assert capsys.readouterr().err == (
        "vjax quantize: error: this needs qwix, which is not installed: "
        "pip install 'vjax[deploy]'\n"
    )


@pytest.mark.parametrize("module,install", [
    ("torch", "pip install 'vjax[torch]'"), ("transformers", "pip install 'vjax[torch]'"),
    ("onnxruntime", "pip install 'vjax[deploy]'"), ("apache_beam", "pip install 'vjax[beam]'"),
    ("jax2onnx", "pip install --no-deps 'jax2onnx>=0.17,<0.18'"),
    ("einops", None),  # a module vjax always needs: a broken install or our bug, traceback kept
])  # fmt: skip
def test_a_missing_module_is_one_line_only_for_an_optional_extra(capsys, monkeypatch, module,
                                                                  install):  # fmt: skip
    import sys

    from vjax.errors import run_guarded

    def needs(argv):
        monkeypatch.setitem(sys.modules, module, None)
        __import__(module + ".sub" if module == "transformers" else module)

    if install is None:
        with pytest.raises(ModuleNotFoundError, match=module):
            run_guarded(needs, [], "vjax x")
        return
    assert run_guarded(needs, [], "vjax x") == 2
    assert capsys.readouterr().err == (
        f"vjax x: error: this needs {module}, which is not installed: {install}\n"
    )


def test_a_get_config_without_an_argument_is_called_without_one(tmp_path, monkeypatch, capsys):
    """ml_collections' usual ``def get_config():`` was called with None (a TypeError); with
    an ``:ARG`` it cannot take, that is one line."""
    from vjax.config_utils import load_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.py").write_text(
        "from vjax.config_utils import load_config\n"
        "def get_config():\n    return load_config('configs/demo.py:tiny')\n"
    )
    assert (
        load_config("mine.py").train.num_steps == load_config(f"{DEMO_CONFIG}:tiny").train.num_steps
    )
    line = _one_line_error(["train", "--workdir=run", "--config=mine.py:big"], capsys)
    assert line.endswith("--config=mine.py:big: its get_config() takes no argument; drop ':big'")


def test_a_home_folder_after_an_equals_sign_is_expanded(files, tmp_path, monkeypatch, capsys):
    """The shell leaves ``--workdir=~/x`` as it is: vjax made a folder named ``~`` in the
    working directory (and looked for ``~/run`` there)."""
    from vjax.errors import home_expanded

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home = str(tmp_path / "home")
    assert home_expanded("--workdir=~/runs/a") == f"--workdir={home}/runs/a"
    assert home_expanded("--config.train.init_from=~") == f"--config.train.init_from={home}"
    for unchanged in ("--split=test", "~/clip.mp4", "--config.optimizer.freeze=^(?!c)", "-x=~"):
        assert home_expanded(unchanged) == unchanged
    monkeypatch.chdir(tmp_path)
    line = _one_line_error(["eval", "--workdir=~/run"], capsys)
    assert line.endswith(f"no checkpoint to evaluate in '{home}/run'; train first (vjax train "
                         "--workdir=...)")  # fmt: skip
    shutil.copytree(files["model"], tmp_path / "home" / "model")  # a converted model at ~/model
    assert vjax_main(["predict", "--model=~/model", files["video"], "--top_k=1"]) == 0
    assert not (tmp_path / "~").exists()


def test_eval_of_a_runs_checkpoints_folder_names_the_run(files, capsys):
    for inner in ("checkpoints", "checkpoints/0"):
        line = _one_line_error(["eval", f"--workdir={files['model']}/{inner}"], capsys)
        assert line.endswith(f"is a run's checkpoints; give the run's folder: "
                             f"--workdir={files['model']}")  # fmt: skip


@pytest.mark.parametrize("with_config", [False, True])
def test_training_on_in_a_converted_models_folder_says_to_fine_tune_from_it(
    files, capsys, with_config
):
    """Before: "opt_state missing ... an optimiser setting changed" (a pruned or converted
    model has no optimiser state), or a list of qvalue mismatches for an int8 one."""
    config = [f"--config={DEMO_CONFIG}:tiny"] if with_config else []
    line = _one_line_error(["train", f"--workdir={files['model']}", *config], capsys)
    assert line.endswith(
        f"{files['model']!r} holds a model that vjax convert wrote, not a training run to go on "
        f"with: fine-tune it into a new workdir with --config.train.init_from={files['model']}"
    )
    assert os.listdir(files["model"]) == ["checkpoints"]


def test_export_with_no_format_says_to_name_one(files, tmp_path, capsys):
    line = _one_line_error(
        ["export", f"--model={files['model']}", f"--out={tmp_path / 'e'}", "--format=,"], capsys,
        prefix="export error: ",
    )  # fmt: skip
    assert line.endswith("--format names no format; give one or more of "
                         "stablehlo,onnx,savedmodel,tflite"), line  # fmt: skip
    assert not (tmp_path / "e").exists()


def test_training_into_an_export_folder_is_refused(files, capsys):
    """It trained there, beside the export, which `vjax predict` then ran instead of the run."""
    before = sorted(os.listdir(files["export"]))
    line = _one_line_error(["train", f"--workdir={files['export']}",
                            f"--config={DEMO_CONFIG}:tiny"], capsys)  # fmt: skip
    assert f"workdir {files['export']!r} holds a model `vjax export` wrote: train into a new " in (
        line
    )
    assert sorted(os.listdir(files["export"])) == before


# Where nothing can be written, even as root: a folder in /proc.
NOT_WRITABLE = "/proc/vjax-test"


@pytest.mark.parametrize(
    "argv",
    [["train", f"--workdir={NOT_WRITABLE}/run", f"--config={DEMO_CONFIG}:tiny"],
     ["demo", f"--workdir={NOT_WRITABLE}/run", f"--config={DEMO_CONFIG}:tiny"],
     ["prepare", "vjax_motion", f"--data_dir={NOT_WRITABLE}/tfds", "--num_train=8"],
     ["train", "--workdir={tmp}/run", f"--config={DEMO_CONFIG}:tiny",
      f"--config.dataset.data_dir={NOT_WRITABLE}/tfds"]],
    ids=["train", "demo", "prepare", "train_data_dir"],
)  # fmt: skip
def test_a_folder_that_cannot_be_written_is_one_line_before_any_work(tmp_path, capsys, argv):
    """These were tracebacks (PermissionError), train's after its data and model were built."""
    line = _one_line_error([a.format(tmp=tmp_path) for a in argv], capsys)
    assert f"cannot write to '{NOT_WRITABLE}/" in line and "(to be made in '/proc')" in line
    assert not list(tmp_path.iterdir())


def test_eval_into_a_run_it_cannot_write_to_is_one_line_before_evaluating(
    files, tmp_path, monkeypatch, capsys
):
    """eval evaluated, then failed writing its result (a read-only copy of a run)."""
    import tempfile

    from vjax import storage

    run = tmp_path / "read_only_run"
    shutil.copytree(files["model"], run)

    def read_only(*args, dir=None, **kwargs):
        if dir == str(run):
            raise PermissionError(30, "Read-only file system")
        return tempfile.TemporaryFile(*args, dir=dir, **kwargs)

    monkeypatch.setattr(storage.tempfile, "TemporaryFile", read_only)
    argv = ["eval", f"--workdir={run}", f"--config={DEMO_CONFIG}:tiny",
            f"--config.dataset.data_dir={tmp_path / 'tfds'}"]  # fmt: skip
    assert _one_line_error(argv, capsys).endswith(f"cannot write to '{run}': Read-only file system")
    assert not (tmp_path / "tfds").exists()  # refused before the dataset was prepared


def test_compare_names_a_missing_run_and_a_split_it_has_not(runs, capsys):
    a, b = runs
    line = _one_line_error(["compare", str(a), str(b) + "_typo"], capsys)
    assert f"'{b}_typo' does not exist; give a workdir or the eval_<split>_step<N>.json" in line
    line = _one_line_error(["compare", str(a), str(b), "--split=tset"], capsys)
    assert line.endswith(
        f"no eval_tset_step*.json in '{a}': it holds the results of --split=test; did you mean "
        "--split=test?"
    )


@pytest.mark.parametrize("which", ["missing", "folder"])
def test_predict_names_a_missing_file_or_a_folder_before_loading_the_model(files, capsys, which):
    """Both were "skipped (unreadable: FileNotFoundError: [Errno 2] ...)" after the model
    loaded, exit 1."""
    path = files["root"] / "no_such.mp4" if which == "missing" else files["root"]
    line = _one_line_error(["predict", f"--model={files['model']}", files["video"], str(path)],
                           capsys)  # fmt: skip
    what = "does not exist" if which == "missing" else "is a folder; give the files in it"
    assert f"argument videos: '{path}' {what}" in line


def test_a_workdir_whose_config_json_is_damaged_still_evaluates(tmp_path, caplog):
    """eval compared the run's config.json with its config: a damaged copy was a traceback."""
    from vjax import train
    from vjax.config_utils import load_config

    (tmp_path / "config.json").write_text("{bad")
    config = load_config(f"{DEMO_CONFIG}:tiny")
    assert train._changed_from_training(config, str(tmp_path)) == ""
    assert "config.json is not readable JSON" in caplog.text


def test_a_config_mistake_in_eval_is_still_one_line_from_the_preflight(files, tmp_path, capsys):
    """The model-fits check before the dataset builds the config's model: a mistake there is
    left to the preflight's one line (it was a ValueError traceback)."""
    argv = ["eval", f"--workdir={files['model']}", f"--config={DEMO_CONFIG}:tiny",
            "--config.train.dtype=fp16",
            f"--config.dataset.data_dir={tmp_path / 'tfds'}"]  # fmt: skip
    line = _one_line_error(argv, capsys)
    assert "fp16" in line, line
    assert not (tmp_path / "tfds").exists()


def test_demo_with_a_config_file_that_does_not_exist_says_so(tmp_path, capsys):
    line = _one_line_error(["demo", f"--workdir={tmp_path / 'run'}", "--config=configs/demoo.py"],
                           capsys)  # fmt: skip
    assert "config file 'configs/demoo.py' does not exist" in line, line


def test_preparation_checks_the_folder_tfds_would_write(monkeypatch, tmp_path):
    """``~`` and the default are TFDS's to expand: unexpanded, ``~/tfds`` was checked in the
    working directory."""
    from vjax.data.datasets import prepare_builder
    from vjax.errors import UserError

    class Unprepared:
        def is_prepared(self):
            return False

        def download_and_prepare(self, **kwargs):
            raise AssertionError("prepared after the check failed")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", "/proc")  # where nothing can be written
    for data_dir in ("~/tfds", ""):
        with pytest.raises(UserError, match=r"cannot write to '/proc/"):
            prepare_builder(Unprepared(), data_dir)
