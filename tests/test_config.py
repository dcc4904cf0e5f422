"""Configs: variants, typed command-line overrides, and errors that name the bad key."""

import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest
from conftest import DEMO_CONFIG, REPO

from vjax.bench import vjax_recipe
from vjax.config_utils import (
    DEFAULT_CONFIG,
    RECIPES,
    ConfigError,
    apply_overrides,
    check_known_keys,
    config_file,
    config_module,
    default_settings,
    load_config,
    unknown_keys,
    with_absolute_paths,
    with_defaults,
)
from vjax.models import build_model


def test_variants_select_model_and_size():
    assert load_config(f"{DEMO_CONFIG}:vivit").model.name == "vivit"
    assert load_config(f"{DEMO_CONFIG}:single_frame").model.name == "single_frame"
    tiny = load_config(f"{DEMO_CONFIG}:tiny")
    assert tiny.train.num_steps < 20 and tiny.model.hidden_size == 32
    with pytest.raises(ValueError, match="unknown demo variant"):
        load_config(f"{DEMO_CONFIG}:vivitt")
    assert load_config(pathlib.Path(DEMO_CONFIG)).model.name == "vivit"  # was an AttributeError


def test_overrides_are_parsed_to_the_field_type():
    config = load_config(DEMO_CONFIG)
    apply_overrides(
        config,
        {
            "optimizer.lr": "3e-4",
            "train.num_steps": "7",
            "model.pooling": "gap",
            "model.hidden_size": "64",
            "input.mean": "(0.1, 0.2, 0.3)",
            "seed": "5",
        },
    )
    assert config.optimizer.lr == pytest.approx(3e-4)
    assert config.train.num_steps == 7 and isinstance(config.train.num_steps, int)
    assert config.model.pooling == "gap"
    assert config.model.hidden_size == 64
    assert tuple(config.input.mean) == (0.1, 0.2, 0.3)
    assert config.seed == 5


def test_unknown_key_names_it_and_the_closest_valid_keys():
    config = load_config(DEMO_CONFIG)
    with pytest.raises(ConfigError) as err:
        apply_overrides(config, {"optimizer.lrr": "1e-3"})
    assert "'optimizer.lrr'" in str(err.value) and "optimizer.lr" in str(err.value)
    with pytest.raises(ConfigError, match="'optimiser.lr'.*optimizer.lr"):
        apply_overrides(config, {"optimiser.lr": "1e-3"})


def test_badly_typed_value_is_an_error():
    config = load_config(DEMO_CONFIG)
    with pytest.raises(ConfigError, match="train.num_steps"):
        apply_overrides(config, {"train.num_steps": "many"})


def test_none_leaves_out_a_nested_section_but_not_a_top_level_one():
    """``--config.input.audio=None`` (what the audio data's errors say to set) leaves the
    spectrograms out: the input options have no audio, and an MBT that still takes audio
    fails the preflight naming the fix; ``train.distill=None`` is no distillation. A top-level
    section cannot be None, and a section takes no other text (``none`` is not None)."""
    from vjax import objectives
    from vjax.data.transforms import InputOptions
    from vjax.distill import from_config as distill_from_config
    from vjax.preflight import check_config

    config = load_config(f"{DEMO_CONFIG}:av,tiny")
    apply_overrides(config, {"input.audio": "None", "train.distill": "None"})
    assert config.input.audio is None and config.train.distill is None
    assert InputOptions.from_config(config.input).audio is None
    spec = objectives.get("classification")
    assert distill_from_config(config, spec, ["left", "right"], (8, 32, 32, 3)) == (spec, None)
    with pytest.raises(ConfigError, match=r"takes audio.*input\.audio is not set.*modalities"):
        check_config(config)
    apply_overrides(config, {"model.modalities": "('video',)"})
    check_config(config)

    for key, text, message in [
        ("input.audio", "none", "input.audio: a section: set its keys one at a time, or None"),
        ("model", "None", "model: a section: set its keys one at a time; got 'None'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            apply_overrides(load_config(f"{DEMO_CONFIG}:av,tiny"), {key: text})
    # A key under a section an earlier override left out is unknown, and not suggested back.
    with pytest.raises(ConfigError, match=r"'train.distill.alpha'; did you mean train.distill,"):
        apply_overrides(
            load_config(f"{DEMO_CONFIG}:av,tiny"),
            {"train.distill": "None", "train.distill.alpha": "0.5"},
        )


def test_unknown_model_field_and_name():
    with pytest.raises(ValueError, match="'model.num_layer'.*num_layers"):
        build_model({"name": "vivit", "num_layer": 2}, num_classes=3)
    with pytest.raises(ValueError, match="unknown model 'vivt'.*vivit"):
        build_model({"name": "vivt"}, num_classes=3)


def test_main_reports_config_errors_with_exit_code_2(capsys, tmp_path):
    from vjax.main import main

    code = main(
        [
            "--mode=train",
            f"--config={DEMO_CONFIG}:tiny",
            f"--workdir={tmp_path}",
            "--config.train.num_stepz=3",
        ]
    )
    assert code == 2
    assert "train.num_steps" in capsys.readouterr().err


def test_a_config_file_of_ones_own_with_a_misspelt_key_fails_naming_it(capsys, tmp_path):
    """A key set in the file itself (not an override) reached no check: the run trained with
    the default. Every section is checked before the dataset is prepared."""
    from vjax.main import main

    for line, named in (
        ("c.train.num_step = 5", "'train.num_step'; did you mean train.num_steps"),
        ("c.optimizer.weight_decy = 0.1", "'optimizer.weight_decy'; did you mean "
         "optimizer.weight_decay"),
        ("c.sharding.meshh = (('data', 1),)", "'sharding.meshh'; did you mean sharding.mesh"),
        ("c.train.distill.temprature = 2.0", "'train.distill.temprature'; did you mean "
         "train.distill.temperature"),
        ("c.trian = ml_collections.ConfigDict()", "'trian'; did you mean train"),
        ("c.input.crop_szie = 8", "'input.crop_szie'; did you mean input.crop_size"),
    ):  # fmt: skip
        config = tmp_path / "mine.py"
        config.write_text(
            "import ml_collections\n"
            "from vjax.config_utils import load_config\n\n\n"
            "def get_config():\n"
            f"    c = load_config({DEMO_CONFIG + ':tiny'!r})\n"
            "    c.unlock()\n"
            f"    {line}\n"
            "    return c\n"
        )
        data = tmp_path / "never_prepared"
        argv = ["--mode=train", f"--config={config}", f"--workdir={tmp_path / 'run'}",
                f"--config.dataset.data_dir={data}"]  # fmt: skip
        assert main(argv) == 2, line
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"unknown config key {named}" in err[0], (line, err)
        assert not data.exists()  # refused before the dataset was prepared


def test_every_recipe_sets_only_keys_the_default_config_holds():
    """What makes the default config the list of every setting (the check above, and what an
    older run's config is completed from): no recipe adds a key."""
    defaults = load_config(DEFAULT_CONFIG).to_dict()
    specs = [f"{DEMO_CONFIG}:{v}" for v in ("vivit", "tiny", "single_frame,tiny",
                                            "r2plus1d,tiny", "lrcn", "av", "av,tiny")]  # fmt: skip
    for family in ("conv3d", "mbt", "video_transformers", "videomae"):
        path = os.path.join(REPO, "configs", f"{family}.py")
        for recipe in config_module(path).RECIPES:
            specs += [f"{path}:{recipe}", f"{path}:{recipe},tiny"]
    specs += [os.path.join(REPO, "configs", f"videomae.py:{v}") for v in
              ("pretrain_motion", "finetune_motion")]  # fmt: skip
    for spec in specs:
        assert unknown_keys(load_config(spec).to_dict(), defaults) == [], spec
    assert len(specs) > 50
    # The sections checked where their code reads them are left to it; anything under a key
    # whose default is a value, not a section, is not a key of ours to check.
    extra = {"model": {"anything": 1}, "train": {"quantization": {"mode": "int8"}, "x": 1},
             "sharding": {"rules": [["batch", "data"]]}, "seed": 0, "trian": {}}  # fmt: skip
    assert unknown_keys(extra, defaults) == ["train.x", "trian"]


def test_the_known_keys_are_vjaxs_own_whatever_the_working_directory_holds(tmp_path, monkeypatch):
    """A project's own (or older) configs/demo.py is what `vjax train` reads by default, but
    not the list of settings vjax reads: that is vjax's own demo config."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "demo.py").write_text(
        "import ml_collections\n\n\ndef get_config(arg=None):\n"
        "    return ml_collections.ConfigDict({'seed': 0, 'train': {'num_steps': 1}})\n"
    )
    monkeypatch.chdir(tmp_path)
    assert "optimizer" not in load_config(DEFAULT_CONFIG)  # the project's own is the default
    assert "optimizer" in default_settings()
    check_known_keys(load_config(f"{DEMO_CONFIG}:tiny"))  # not refused: sharding.mesh etc.


def test_an_older_runs_config_drops_the_settings_this_vjax_no_longer_reads(monkeypatch, caplog):
    from vjax import checkpoint
    from vjax.main import trained_config

    recorded = load_config(f"{DEMO_CONFIG}:tiny").to_dict()
    recorded["train"]["retired_setting"] = 3
    recorded["input"]["retired_option"] = True
    del recorded["train"]["log_every"]  # and one it did not have yet
    monkeypatch.setattr(checkpoint, "read_metadata", lambda workdir: {"config": recorded})
    config = trained_config("runs/old")
    assert "retired_setting" not in config.train and "retired_option" not in config.input
    assert config.input.global_batch_size == recorded["input"]["global_batch_size"]
    assert config.train.log_every == load_config(DEFAULT_CONFIG).train.log_every
    assert (
        "runs/old records settings this vjax no longer reads; ignoring input.retired_option, "
        "train.retired_setting" in caplog.text
    )
    assert recorded["train"]["retired_setting"] == 3  # the metadata read is not changed


@pytest.mark.parametrize("variant", ["vivit", "single_frame", "r2plus1d", "lrcn"])
def test_every_demo_variant_builds_its_model_for_the_demo_clip(variant):
    from vjax.flops import count_params

    for arg in (variant, f"{variant},tiny"):
        config = load_config(f"{DEMO_CONFIG}:{arg}")
        data = config.dataset
        model = build_model(config.model, data.num_classes)
        clip = (1, data.num_frames, data.height, data.width, 3)
        model.check_input(clip)
        assert 1e4 < count_params(model, clip) < 1e6  # CPU-sized, like the demo ViViT


def test_configs_path_falls_back_to_the_recipes_installed_with_vjax(tmp_path, monkeypatch):
    """Outside a checkout ``--config=configs/demo.py`` is vjax's own recipe; a ``configs/``
    folder in the working directory comes first (not for the benchmarks' recipes); a missing
    file names the installed ones."""
    monkeypatch.chdir(tmp_path)
    assert config_file("configs/demo.py") == os.path.join(RECIPES, "demo.py")
    assert load_config("configs/demo.py:tiny").model.hidden_size == 32
    os.makedirs("configs")
    with open("configs/demo.py", "w") as f:
        f.write("import ml_collections\n\ndef get_config(arg):\n")
        f.write(
            "    sections = dict.fromkeys(('dataset', 'input', 'model', 'optimizer', 'train',"
            " 'sharding'), {})\n"
        )
        f.write("    return ml_collections.ConfigDict({'mine': arg, 'seed': 0, **sections})\n")
    assert load_config("configs/demo.py:x").mine == "x"
    assert vjax_recipe("demo.py:tiny", {"train.num_steps": "3"}).train.num_steps == 3  # vjax's
    with pytest.raises(ConfigError, match=r"'configs/demoo.py' does not exist .*configs/demo.py"):
        load_config("configs/demoo.py")


def test_the_wheel_carries_every_recipe(tmp_path):
    """``pip install vjax`` (not ``-e``) installs ``configs/`` as ``vjax/configs``: the wheel,
    built from a copy of the sources without the network, holds each recipe unchanged."""
    from importlib.metadata import version

    if int(version("setuptools").split(".")[0]) < 77:  # [build-system] asks for >= 77
        pytest.skip(f"setuptools {version('setuptools')} here cannot build vjax without the "
                    "network (pyproject's [build-system] needs >= 77)")  # fmt: skip
    source = tmp_path / "src"
    for name in ("vjax", "configs"):
        shutil.copytree(os.path.join(REPO, name), source / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, name), source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(tmp_path / "dist"), str(source)],
        check=True,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("vjax-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packaged = {
            os.path.basename(name): archive.read(name)
            for name in archive.namelist()
            if name.startswith("vjax/configs/")
        }
    recipes = sorted(n for n in os.listdir(os.path.join(REPO, "configs")) if n.endswith(".py"))
    assert sorted(packaged) == recipes
    for name in recipes:
        with open(os.path.join(REPO, "configs", name), "rb") as f:
            assert packaged[name] == f.read(), name


def test_a_recorded_config_takes_only_the_settings_it_lacks_from_the_defaults():
    """How ``vjax eval`` reads a run saved before a setting existed: missing keys filled
    section by section, recorded values kept, the model and dataset sections as recorded."""
    recorded = {"model": {"name": "r2plus1d"}, "dataset": {"name": "ucf101"},
                "train": {"num_steps": 7}, "input": {"audio": None}}  # fmt: skip
    defaults = {"model": {"name": "vivit", "size": "B/16x2"}, "dataset": {"name": "vjax_motion",
                "fps": 8}, "train": {"num_steps": 800, "dtype": "float32"},
                "input": {"audio": {"sample_rate": 16000}, "mean": [0.5]},
                "sharding": {"rules": [["batch", "data"]]}}  # fmt: skip
    assert with_defaults(recorded, defaults, whole=("model", "dataset")) == {
        "model": {"name": "r2plus1d"}, "dataset": {"name": "ucf101"},
        "train": {"num_steps": 7, "dtype": "float32"}, "input": {"audio": None, "mean": [0.5]},
        "sharding": {"rules": [["batch", "data"]]},
    }  # fmt: skip
    assert recorded["train"] == {"num_steps": 7}  # not changed in place


def test_a_run_records_its_local_data_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = load_config(f"{DEMO_CONFIG}:tiny")
    for data_dir, src, expected in (
        ("tfds", "videos/", (str(tmp_path / "tfds"), str(tmp_path / "videos"))),
        ("~/tfds", "../v", (str(tmp_path / "home" / "tfds"), str(tmp_path.parent / "v"))),
        ("gs://b/tfds", "", ("gs://b/tfds", "")),  # a bucket's URL and "no src" as they are
    ):
        with config.dataset.unlocked():  # src: a video dataset's (the demo's has none)
            config.dataset.data_dir, config.dataset.src = data_dir, src
        recorded = with_absolute_paths(config)
        assert (recorded.dataset.data_dir, recorded.dataset.src) == expected
        assert (config.dataset.data_dir, config.dataset.src) == (data_dir, src)  # a copy
    # The models a run starts from and learns from, likewise.
    apply_overrides(config, {"train.init_from": "runs/mae", "train.distill.teacher": "t/"})
    recorded = with_absolute_paths(config).train
    assert recorded.init_from == str(tmp_path / "runs" / "mae")
    assert recorded.distill.teacher == str(tmp_path / "t")
