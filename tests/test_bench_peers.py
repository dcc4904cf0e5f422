"""``vjax bench train --peers``: the vjax and PyTorch train steps compute the same loss on the
same weights and batch (so the comparison is like for like), the harness runs end to end in
its own processes and writes its table, and it imports without TensorFlow or ml_collections."""

import os
import subprocess
import sys

import gpu_bench_train
import numpy as np
import pytest
from conftest import NOT_ON_GPU_IMAGE
from local import host_device_flags

from vjax.bench_peers import ModelSpec, build_pair, synthetic_batch, torch_train_step
from vjax.bench_train import compile_step, format_peer_table, parse_args

torch = pytest.importorskip("torch", reason="the peers are PyTorch models")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "num_hidden_layers=1,hidden_size=32,num_attention_heads=2,intermediate_size=64"
BATCH = 8  # tests/conftest.py: 8 host devices, the vjax step is data parallel over them


@pytest.mark.parametrize(
    "spec",
    [f"hf_vivit:{TINY}@4x32x32", f"hf_timesformer:{TINY}@2x32x32"],
)  # R3D-18 (BatchNorm in training mode): first-step losses in the harness test below
def test_vjax_and_torch_steps_compute_the_same_loss(spec):
    parsed = ModelSpec.parse(spec)
    _, variables, model_config, module = build_pair(parsed)
    data = synthetic_batch(BATCH, parsed.clip)
    # vjax folds HF's class-token position row into its cls parameter (one parameter where
    # torch has two, so AdamW moves their sum once, not twice): train it once here too.
    table = module.base_model.embeddings.position_embeddings
    table.register_hook(lambda grad: torch.cat([0 * grad[:, :1], grad[:, 1:]], dim=1))
    step = torch_train_step(module, "float32", torch.device("cpu"))
    torch_loss = float(
        step(torch.from_numpy(data["video"]), torch.from_numpy(data["label"]).long())
    )
    vjax_step = compile_step(model_config, parsed.clip, BATCH, "float32", variables=variables)
    vjax_loss = float(vjax_step()["loss"])
    # Random 400-way heads: a loss near log(400) that the weights move by far more than this.
    assert vjax_loss == pytest.approx(torch_loss, rel=2e-5, abs=2e-5)
    assert abs(torch_loss - np.log(400)) > 1e-3  # the converted head is not a zero head
    # The same update on both sides (AdamW, lr, decay, clipping): the second step's losses,
    # on the updated weights, agree too and differ from the first.
    second = float(step(torch.from_numpy(data["video"]), torch.from_numpy(data["label"]).long()))
    assert float(vjax_step()["loss"]) == pytest.approx(second, rel=1e-4)
    assert abs(second - torch_loss) > 1e-2


def test_peers_run_in_their_processes_and_write_the_table(tmp_path, monkeypatch, gpu_image_env):
    """The GPU script's CPU smoke run, eager, one step, on its tiny ViViT pair: each side in its
    own process, their first-step losses equal (as the in-process test above checks of the
    same pair), the table written beside the other sections. The conv pair (R3D-18) costs a
    minute here; its training-mode BatchNorm is checked against torch's in
    test_convert_torchvision.py. The measuring processes run without the packages the GPU
    machine's image lacks."""
    # The measuring processes see two CPU devices (the tests' other XLA flags kept); the vjax
    # side uses one, as the peer does (it ran data-parallel over all: N devices against 1).
    monkeypatch.setenv("XLA_FLAGS", host_device_flags(2))
    monkeypatch.setenv("PYTHONPATH", gpu_image_env["PYTHONPATH"])
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n## vjax bench train\n\nkept\n")
    pair = [m for m in gpu_bench_train.SMOKE_ARGS if m.startswith("hf_vivit:")]
    rows, found = gpu_bench_train.run(["--cpu-smoke", f"--out={path}", "--models", *pair])
    assert found == []  # the vjax row ran; first-step losses agree to 1e-4
    (row,) = rows  # the twin started from its peer's weights, on the same batch
    assert row["vjax"]["first_loss"] == pytest.approx(row["torch"]["first_loss"], rel=1e-5)
    assert row["vjax"]["device"].startswith("1 x "), row["vjax"]["device"]
    text = path.read_text()
    assert "## vjax bench train\n\nkept" in text and "## vjax bench train --peers" in text
    rows = [line for line in text.splitlines() if line.startswith("| hf_vivit")]
    assert len(rows) == 1 and "failed" not in text, text
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        vjax, eager, compiled, ratio = cells[3:7]
        assert float(vjax) > 0 and float(eager) > 0 and compiled == "-"  # not asked for
        assert float(ratio) == pytest.approx(float(vjax) / float(eager), rel=0.02, abs=0.01)
    assert f"(cpu), {os.cpu_count()} CPU cores" in text
    assert "(no time limit, at least 2 steps)" in text  # --budget=0: it said "stops after 0 s"
    assert "--forms=torch" in text and "--deadline=600" in text


def test_the_gpu_script_parses_and_checks_the_kernel():
    args, _ = parse_args(gpu_bench_train.GPU_ARGS)
    assert args.peers and args.models is None and args.compile_models == "hf_videomae,r2plus1d_18"
    # The CPU smoke run writes no table over BENCHMARKS.md's real one (it did, from a checkout).
    assert parse_args(gpu_bench_train.SMOKE_ARGS)[0].out == ""
    ran = {"fused_attention_calls": 2, "clips_per_s": 1.0}
    rows = [{"model": "hf_vivit size=B", "vjax": ran},
            {"model": "hf_videomae size=B", "vjax": {**ran, "fused_attention_calls": 0}},
            {"model": "r3d_18", "vjax": {**ran, "fused_attention_calls": 0}},
            {"model": "r2plus1d_18", "vjax": {"error": "exit 1: OOM"}}]  # fmt: skip
    assert gpu_bench_train.problems(rows, gpu=True) == [
        "hf_videomae size=B: no cuDNN fused attention in vjax's compiled step",
        "r2plus1d_18: vjax did not run: exit 1: OOM",
    ]
    assert len(gpu_bench_train.problems(rows, gpu=False)) == 1


def test_a_failed_side_is_a_numbered_note():
    ok = {"clips_per_s": 2.0, "gflops": 1.0, "memory_gib": 1.0, "compile_s": 3.0}
    rows = [
        {
            "model": "m",
            "clip": "2x8x8",
            "batch": 4,
            "vjax": ok,
            "torch": {**ok, "clips_per_s": 4.0},
            "torch.compile": {"error": "exit 1: boom"},
        }
    ]
    table = format_peer_table(rows, peak=0.024)
    row = table.splitlines()[2]
    assert "| 2.00 | 4.00 | failed [1] | 0.50 | - |" in row
    # 3 passes x 2 FLOPs/MAC x 1 GMAC x clips/s; MFU against the 0.024 TFLOP/s peak.
    assert "| 0.012 / 0.024 / - | 50.0 / 100.0 / - |" in row
    assert table.endswith("[1] exit 1: boom")


def test_imports_without_the_packages_the_gpu_image_lacks(gpu_image_env):
    code = (
        "import vjax.bench_train\n"
        "from vjax.bench_peers import ModelSpec, build_pair\n"
        f"print(build_pair(ModelSpec.parse('hf_timesformer:{TINY}@2x32x32'))[2]['name'])\n"
        "import importlib.util, sys\n"  # and those packages are missing, as there
        f"print([importlib.util.find_spec(n) for n in {NOT_ON_GPU_IMAGE!r}], "
        f"set(sys.modules) & set({NOT_ON_GPU_IMAGE!r}))\n"
        "import vjax.cli\n"  # the command as typed there: `vjax bench train --peers --help`
        "vjax.cli.main(['bench', 'train', '--peers', '--help'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=gpu_image_env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("timesformer\n") and "--budget" in done.stdout
    assert done.stdout.splitlines()[1] == f"{[None] * len(NOT_ON_GPU_IMAGE)} set()"


def test_a_wrong_form_is_one_error_line_and_exit_code_2():
    """``vjax bench train --peers --forms=tourch``: one line naming the valid forms (no
    usage block); exit 2, no traceback, nothing measured."""
    done = subprocess.run(
        [sys.executable, "-m", "vjax.cli", "bench", "train", "--peers", "--forms=tourch",
         "--out="], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr == ("vjax bench: error: --forms takes torch and/or torch.compile, got "
                           "'tourch' (vjax bench train --help lists the flags)\n")  # fmt: skip
    assert "measured" not in done.stdout
