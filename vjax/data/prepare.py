"""``vjax prepare NAME --key=value ...``: prepares a dataset once, then prints what was kept.

    vjax prepare video_folder --src=~/videos/actions --data_dir=~/tfds --fps=10 --short_side=256
    vjax prepare epic_kitchens --src=~/data/EPIC-KITCHENS --data_dir=~/tfds --fps=12
    vjax prepare vjax_motion --data_dir=~/tfds --num_classes=6
    vjax prepare video_folder --src=~/videos --data_dir=~/tfds --audio_sample_rate=16000  # + sound
    vjax prepare vggsound --src=~/data/vggsound --data_dir=~/tfds --fps=10   # sound by default
    vjax prepare kinetics --src=/mnt/k400 --data_dir=/mnt/b/tfds --beam_runner=FlinkRunner \\
        --beam_options="--flink_master=HOST:8081"   # workers mount the videos and bucket b

The flags are the dataset's preparation arguments (``vjax.data.datasets``); each value is
parsed as the type of that argument's default (as ``--config.key=`` overrides are). Skipped
files are listed in the dataset folder's ``prepare_report.json``. Video datasets prepare on
Apache Beam with ``--beam_runner=`` (``DirectRunner`` locally) and/or ``--beam_options=``
(pipeline flags in one quoted string); ``pip install 'vjax[beam]'`` first.
"""

from __future__ import annotations

import inspect
from collections.abc import Collection, Mapping, Sequence

HELP_FLAGS = ("-h", "--help")
# Flags vjax prepare sets itself, and data_dir, which load_dataset defaults.
_NOT_REQUIRED = ("progress_bar", "data_dir")


def _required(parameters: Mapping[str, inspect.Parameter]) -> list[str]:
    """The preparation arguments without a default (``src`` of the video datasets)."""
    return [
        key for key, p in parameters.items()
        if p.default is inspect.Parameter.empty and key not in _NOT_REQUIRED
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]  # fmt: skip


def dataset_help(name: str, parameters: Mapping[str, inspect.Parameter]) -> str:
    """The flags ``vjax prepare NAME`` takes: the required ones, then each with its default."""
    lines = [f"vjax prepare {name} flags:", "  --data_dir=DIR  (default ~/tensorflow_datasets)"]
    lines += [f"  --{key}=...  (required)" for key in _required(parameters)]
    lines += [
        f"  --{key}={p.default!r}" for key, p in parameters.items()
        if p.default is not inspect.Parameter.empty and key not in _NOT_REQUIRED
    ]  # fmt: skip
    return "\n".join(lines)


def check_required(
    name: str, parameters: Mapping[str, inspect.Parameter], given: Collection[str]
) -> None:
    """Raises a ConfigError naming each required flag of dataset ``name`` not ``given``."""
    from vjax.config_utils import ConfigError

    missing = [key for key in _required(parameters) if key not in given]
    if missing:
        flags = " ".join(f"--{key}=..." for key in missing)
        raise ConfigError(f"{name} needs {flags} (vjax prepare {name} --help lists its flags)")


def main(argv: Sequence[str]) -> int:
    """Entry point of ``vjax prepare``; returns the exit code."""
    from vjax.config_utils import ConfigError, _parse_value  # the parser `--config.x=` uses
    from vjax.data.datasets import dataset_class_names, load_dataset, preparer
    from vjax.errors import UserError

    argv = list(argv)
    if not argv or argv[0].startswith("-"):
        print(__doc__.strip())
        return 0 if argv and argv[0] in HELP_FLAGS else 2
    name, flags = argv[0], argv[1:]
    signature = inspect.signature(preparer(name)).parameters
    if any(flag in HELP_FLAGS for flag in flags):
        print(__doc__.strip() + "\n\n" + dataset_help(name, signature))
        return 0
    fields: dict[str, object] = {"name": name, "progress_bar": True}
    for flag in flags:
        key, sep, value = flag.removeprefix("--").partition("=")
        if not flag.startswith("--") or not sep:
            raise ConfigError(f"expected --key=value, got {flag!r}")
        if key not in signature and key != "name":
            from vjax.suggest import closest_hint

            hint = closest_hint(f"--{key}", [f"--{k}" for k in signature])
            raise ConfigError(f"unknown flag --{key}{hint} "
                              f"(vjax prepare {name} --help lists its flags)")  # fmt: skip
        default = signature[key].default if key in signature else None
        default = None if default is inspect.Parameter.empty else default
        try:
            fields[key] = _parse_value(value, default)
        except ConfigError as e:
            raise ConfigError(f"--{key}: {e}") from None
    if all(key in signature for key in fields if key != "name"):  # else load_dataset names a typo
        check_required(name, signature, fields)
    builder = load_dataset(fields)  # a bad source or setting raises a UserError: one line
    if note := getattr(builder, "source_change_note", str)():  # prepared before, from less
        raise UserError(f"{note}; delete that folder to prepare it again")
    print(f"{builder.name} prepared in {builder.data_dir}")
    for split, info in builder.info.splits.items():
        print(f"  {split}: {info.num_examples} examples")
    if not dataset_class_names(builder):
        print("  no labels (videos without classes): pre-train with train.objective=reconstruction")
    from etils import epath

    from vjax.data.video_builder import REPORT_FILE, format_report, read_report

    if (epath.Path(builder.data_dir) / REPORT_FILE).exists():  # decoded videos (not rendered)
        print(format_report(read_report(builder)))
        print(f"the skipped files are listed in {builder.data_dir}/{REPORT_FILE}")
    folder = epath.Path(builder.data_dir).parent
    for left in sorted(p for p in folder.iterdir() if p.name.startswith("incomplete.")):
        print(f"note: {left} was left by a preparation that was killed; delete it (can be large)")
    return 0
