"""A ``gs://`` workdir, as the README's TPU pod command gives: training (two processes),
resuming, evaluating and comparing write every file into the bucket (a local server of Cloud
Storage's API, tests/fake_gcs.py) and nothing on the local disk. Before, vjax made the
workdir a local folder named ``gs:`` and the first checkpoint failed."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import jax
import numpy as np
import pytest
from conftest import DEMO_CONFIG, REPO, randomized, tiny_config
from fake_gcs import bucket_env

from vjax import storage
from vjax.convert import pretrained_config, save_converted
from vjax.data.datasets import load_dataset
from vjax.data.video_io import encode_video
from vjax.models import build_model

BUCKET = "vjax-tests"


@pytest.fixture(scope="module")
def bucket():
    """``(port, environment)`` of a fresh in-memory bucket server, stopped after the module."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "tests", "fake_gcs.py"), str(port), BUCKET],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/storage/v1/b/{BUCKET}/o", timeout=2)
            break
        except (urllib.error.URLError, ConnectionError):
            assert server.poll() is None and time.time() < deadline, "no bucket server"
            time.sleep(0.2)
    yield port, {**os.environ, **bucket_env(port)}
    server.terminate()
    server.wait()


def _objects(port: int, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix`` and its bytes, read over the server's HTTP API."""
    server, objects = f"http://127.0.0.1:{port}", f"storage/v1/b/{BUCKET}/o"
    with urllib.request.urlopen(f"{server}/{objects}?prefix={prefix}") as listing:
        names = [item["name"] for item in json.load(listing).get("items", [])]
    contents = {}
    for name in names:
        quoted = urllib.request.quote(name, safe="")
        with urllib.request.urlopen(f"{server}/download/{objects}/{quoted}?alt=media") as f:
            contents[name[len(prefix) :]] = f.read()
    return contents


def _vjax(env: dict, cwd: str, *args: str, processes: int = 1) -> str:
    """``vjax ARGS`` in ``processes`` processes (``launch/local.py``, 2 devices each) or one."""
    command = [sys.executable, "-m", "vjax.cli", *args]
    if processes > 1:
        launcher = [sys.executable, os.path.join(REPO, "launch", "local.py"),
                    f"--num_processes={processes}", "--devices_per_process=2", "--"]  # fmt: skip
        command = [*launcher, *command]
    run = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    return run.stdout


def _wide_model(folder: str) -> str:
    """A one-block ViViT (random weights, as `vjax convert` writes a model) whose MLP kernel,
    256 x 1280 float32, is over 1 MB: jax2onnx keeps such weights in ``model.onnx.data``."""
    model_config = {"name": "vivit", "size": "Ti/8x2", "num_layers": 1, "hidden_size": 256,
                    "num_heads": 2, "mlp_dim": 1280}  # fmt: skip
    clip, names = (4, 16, 16, 3), ["up", "down", "left", "right"]
    model = build_model(model_config, num_classes=len(names))
    init = jax.jit(lambda key: model.init(key, np.zeros((1, *clip)), train=False))
    config = pretrained_config(model_config, clip, names, source="test")
    return save_converted(folder, config, randomized(jax.device_get(init(jax.random.key(0)))))


def test_train_resume_eval_and_compare_write_into_the_bucket(bucket, data_dir, tmp_path):
    port, env = bucket
    load_dataset(tiny_config(data_dir).dataset)  # the dataset stays local: prepared here
    workdir = f"gs://{BUCKET}/runs/demo"
    flags = [f"--config={DEMO_CONFIG}:tiny", f"--config.dataset.data_dir={data_dir}"]
    cwd = str(tmp_path)

    # Two hosts, as on a pod: each writes its shards of the checkpoints into the bucket.
    _vjax(env, cwd, "train", f"--workdir={workdir}", *flags, "--config.train.num_steps=4",
          processes=2)  # fmt: skip

    # Then, in one process (the CLI's own code, one start-up), each command exiting as said:
    # training on to step 6, evaluating and comparing the run in the bucket; the deployment
    # steps into the bucket and back: an int8 model and its export, the float model's ONNX
    # export (written locally by the converters, then uploaded), predictions from each export
    # in the bucket (run from a downloaded copy) written there; a --json naming no file, or a
    # folder, refused.
    clip = str(tmp_path / "clip.mp4")
    encode_video(clip, np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3)), fps=8)
    wide = _wide_model(str(tmp_path / "wide"))
    models = f"gs://{BUCKET}/models"
    quantized, exported, onnx = f"{models}/int8", f"{models}/exported", f"{models}/onnx"
    commands = [
        (["train", f"--workdir={workdir}", *flags], 0),  # resumes at 4, on to 6
        (["eval", f"--workdir={workdir}", *flags, "--split=test"], 0),
        (["compare", workdir, workdir], 0),
        (["quantize", f"--model={workdir}", f"--out={quantized}", "--mode=int8_weights"], 0),
        (["export", f"--model={quantized}", f"--out={exported}", "--format=stablehlo"], 0),
        (["predict", f"--model={exported}", clip, f"--json={exported}/clip.json"], 0),
        (["predict", f"--model={quantized}", clip, f"--json={quantized}/clip.json"], 0),
        (["export", f"--model={wide}", f"--out={onnx}", "--format=onnx"], 0),
        (["predict", f"--model={onnx}", clip, f"--json={onnx}/clip.json"], 0),
        (["predict", f"--model={wide}", clip, f"--json={wide}/clip.json"], 0),
        (["predict", f"--model={onnx}", clip, f"--json=gs://{BUCKET}"], 2),
        (["predict", f"--model={onnx}", clip, f"--json={models}"], 2),
    ]
    driver = (
        "from vjax.cli import main\n"
        f"for argv, code in {commands!r}:\n    assert main(argv) == code, argv"
    )
    run = subprocess.run([sys.executable, "-c", driver], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert f"Restored checkpoint at step 4 from {workdir}" in run.stdout
    assert f"{workdir}/eval_test_step6.json" in run.stdout
    assert f"argument --json: 'gs://{BUCKET}' names no file; give gs://BUCKET/FILE" in run.stderr
    assert f"argument --json: '{models}' is a folder; give a file path in it" in run.stderr
    # Nothing else written here (no local folder named gs:, no copy of a download).
    assert sorted(os.listdir(cwd)) == ["clip.mp4", "wide"]

    files = _objects(port, "runs/demo/")
    written = [
        "config.json",
        "eval_test_step6.json",
        "eval_test_step6_videos.csv",
        "confusion_test.png",
        "compare_test.png",
        "checkpoints/6/metadata/metadata",
    ]
    assert set(written) <= files.keys(), sorted(files)
    assert not [name for name in files if ".vjax-write-check" in name]  # checked, then deleted
    assert json.loads(files["config.json"])["model"]["name"] == "vivit"
    assert json.loads(files["eval_test_step6.json"])["step"] == 6
    assert {name.split("/")[1] for name in files if name.startswith("tensorboard/")} == {
        "train", "validation", "eval_test"
    }  # fmt: skip
    # Both training processes' records and the evaluation's, appended in turn.
    records = [json.loads(line) for line in files["metrics.jsonl"].decode().splitlines()]
    assert [(r["split"], r["step"]) for r in records] == [
        ("train", 2), ("validation", 3), ("train", 4), ("validation", 4),
        ("train", 6), ("validation", 6), ("eval_test", 6),
    ]  # fmt: skip

    int8 = _objects(port, "models/int8/")
    on_disk = sum(len(data) for name, data in int8.items() if name.startswith("checkpoints/"))
    assert f"checkpoint on disk {on_disk:,} bytes" in run.stdout  # was 0: a local os.walk
    export = _objects(port, "models/exported/")
    assert {"model.stablehlo", "signature.json", "clip.json"} <= export.keys(), sorted(export)
    signature = json.loads(export["signature.json"])
    assert signature["source"] == quantized and signature["files"] == {
        "stablehlo": "model.stablehlo"
    }
    # The export, run from the bucket, predicts what the int8 checkpoint it came from does.
    from_export = json.loads(export["clip.json"])["files"][clip]["top"]
    from_checkpoint = json.loads(int8["clip.json"])["files"][clip]["top"]
    assert [t["label"] for t in from_export] == [t["label"] for t in from_checkpoint]
    np.testing.assert_allclose([t["score"] for t in from_export],
                               [t["score"] for t in from_checkpoint], atol=1e-5)  # fmt: skip
    # The ONNX export keeps its large weights beside the graph; run from the bucket, with
    # them, it predicts what its model does.
    assert {"model.onnx", "model.onnx.data", "signature.json"} <= _objects(
        port, "models/onnx/"
    ).keys()
    from_onnx = json.loads(_objects(port, "models/onnx/")["clip.json"])["files"][clip]["top"]
    from_float = json.loads((tmp_path / "wide" / "clip.json").read_text())["files"][clip]["top"]
    assert [t["label"] for t in from_onnx] == [t["label"] for t in from_float]
    np.testing.assert_allclose([t["score"] for t in from_onnx],
                               [t["score"] for t in from_float], atol=1e-5)  # fmt: skip


# Each command writing into a bucket, given one that does not exist (and a model that does
# not either: the bucket is checked first, before any work), and the folder it names.
NO_BUCKET = {
    "train": (["--workdir=gs://no-such-bucket/run", f"--config={DEMO_CONFIG}:tiny"], "run"),
    "quantize": (["--model=m", "--out=gs://no-such-bucket/int8", "--mode=int8_weights"], "int8"),
    "prune": (["--model=m", "--out=gs://no-such-bucket/pruned", "--ratio=0.5"], "pruned"),
    "export": (["--model=m", "--out=gs://no-such-bucket/exported"], "exported"),
    "predict": (["--model=m", "clip.mp4", "--json=gs://no-such-bucket/clip.json"], ""),
}


@pytest.mark.parametrize("verb", NO_BUCKET)
def test_a_bucket_that_does_not_exist_is_one_line_before_any_work(bucket, tmp_path, verb):
    _, env = bucket
    data_dir = str(tmp_path / "tfds")
    flags, folder = NO_BUCKET[verb]
    if verb == "train":
        flags = [*flags, f"--config.dataset.data_dir={data_dir}"]
    run = subprocess.run([sys.executable, "-m", "vjax.cli", verb, *flags], cwd=str(tmp_path),
                         env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 2 and "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if "error" in line]
    location = f"gs://no-such-bucket/{folder}".rstrip("/")
    assert len(errors) == 1, run.stderr
    assert errors[0].endswith(
        f"cannot write to {location}: FileNotFoundError: Bucket does not exist: no-such-bucket"
    ) or errors[0].startswith(f"vjax {verb}: error: argument --json: cannot write to {location}")
    assert not os.path.exists(data_dir)  # checked before the dataset was prepared


def test_a_bucket_url_stays_a_url_and_a_local_folder_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.absolute("gs://b/runs/x/") == "gs://b/runs/x"
    assert storage.absolute("runs/x") == str(tmp_path / "runs" / "x")
    assert storage.is_remote("s3://b/x") and not storage.is_remote("/tmp/gs/x")


def test_append_adds_text_and_bytes_at_the_end_of_a_local_file(tmp_path):
    log = str(tmp_path / "metrics.jsonl")
    storage.append(log, "a\n")
    storage.append(log, b"\x00b")
    storage.append(log, "é\n")
    assert open(log, "rb").read() == b"a\n\x00b" + "é\n".encode()


def test_a_local_folders_files_sizes_and_staging_are_the_folder_itself(tmp_path, monkeypatch):
    written = {"a.txt": b"12345", "sub/b.bin": b"\0" * 1000, "sub/deeper/c": b""}
    for name, data in written.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    (tmp_path / "empty_folder").mkdir()
    monkeypatch.chdir(tmp_path.parent)
    # Any spelling of the folder (`vjax quantize --out=./q8` failed on "q8/heckpoints/...").
    for spelling in (str(tmp_path), f"./{tmp_path.name}", f"{tmp_path.name}//", f"{tmp_path}/"):
        assert storage.files_under(spelling) == sorted(written), spelling
        assert storage.folder_bytes(spelling) == 1005
    with storage.staged_folder(str(tmp_path / "out")) as staged:
        assert staged == str(tmp_path / "out")  # written in place, nothing to upload
    assert storage.local_copy(str(tmp_path / "a.txt")) == str(tmp_path / "a.txt")
    storage.require_writable(str(tmp_path / "new" / "run"))  # checked where it is made
    assert not (tmp_path / "new").exists()


def test_a_staged_folder_is_uploaded_whole_after_success_and_not_at_all_after_a_failure(
    bucket, tmp_path
):
    port, env = bucket
    script = f"""
import os
from vjax import storage
for name, fails in (("done", False), ("failed", True)):
    try:
        with storage.staged_folder("gs://{BUCKET}/staged/" + name) as local:
            os.makedirs(os.path.join(local, "sub"))
            open(os.path.join(local, "sub", "b.bin"), "wb").write(bytes(range(256)))
            open(os.path.join(local, "a.txt"), "w").write(name)
            if fails:
                raise RuntimeError("a converter failed")
    except RuntimeError:
        pass
copy = storage.local_copy("gs://{BUCKET}/staged/done")
print(sorted(storage.files_under(copy)), open(os.path.join(copy, "a.txt")).read())
"""
    run = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert _objects(port, "staged/") == {"done/a.txt": b"done", "done/sub/b.bin": bytes(range(256))}
    assert run.stdout.split("\n")[0] == "['a.txt', 'sub/b.bin'] done"  # downloaded back whole
