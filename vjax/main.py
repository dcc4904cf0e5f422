"""``python -m vjax.main --mode=MODE --config=FILE[:ARG] --workdir=DIR [--config.K=V]``, MODE one
of train, eval, probe, demo.

The ``vjax`` command (``vjax train ...``) is the same entry point with the mode as a verb.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

MODES = ("train", "eval", "probe", "demo")
_PURPOSE = {
    "train": "Trains, resuming from the newest good checkpoint in --workdir.",
    "eval": "Evaluates the newest good checkpoint in --workdir on --split.",
    "probe": "Linear probe of the encoder in --workdir (a pre-training run or a vjax convert "
    "folder) on --config's classifier and dataset, beside its random initialisation.",
    "demo": "Trains and tests the demo models and writes the report into --workdir.",
}
_OVERRIDES_HELP = """\
config overrides (any number):
  --config.KEY=VALUE    set any field of the config, parsed to the field's type, e.g.
                        --config.optimizer.lr=3e-4 --config.train.num_steps=200
                        (an unknown key is an error naming the closest valid keys)
  --debug               show the traceback of an error in the config or input"""


def trained_config(workdir: str) -> Any:
    """The config the newest checkpoint in ``workdir`` was trained with (its metadata, as
    :func:`vjax.load` builds the model from): what ``vjax eval`` evaluates with when no
    ``--config`` is given, so that a run's model, dataset and input need not be repeated.
    Settings a run saved by an older vjax lacks take the defaults'; those of train, optimizer,
    sharding, input and the top level that this vjax no longer reads are dropped, with a
    warning that names them (a model's or dataset's fields are the checkpoint's)."""
    from vjax import checkpoint
    from vjax.config_utils import (
        config_from_json,
        default_settings,
        unknown_keys,
        with_defaults,
        without_keys,
    )
    from vjax.errors import UserError

    recorded = checkpoint.read_metadata(workdir).get("config")
    if not isinstance(recorded, dict):
        raise UserError(f"the checkpoint in {workdir!r} does not record its config; give --config")
    if not isinstance(recorded.get("dataset"), dict):
        raise UserError(
            f"{workdir!r} holds a model without the dataset it was trained on (a `vjax "
            "convert` folder): give --config for the data to evaluate it on"
        )
    defaults = default_settings()
    if stale := unknown_keys(recorded, defaults):
        logging.getLogger(__name__).warning(
            "%s records settings this vjax no longer reads; ignoring %s", workdir, ", ".join(stale)
        )
        recorded = without_keys(recorded, stale)
    return config_from_json(with_defaults(recorded, defaults, whole=("model", "dataset")))


def parse_args(
    argv: Sequence[str], mode: str | None = None
) -> tuple[argparse.Namespace, dict[str, str]]:
    """Splits ``--config.x.y=v`` overrides from the ordinary flags. With ``mode`` (the verb of
    ``vjax MODE``) there is no ``--mode`` flag and the usage is that mode's."""
    from vjax.config_utils import DEFAULT_CONFIG, ConfigError
    from vjax.errors import ArgumentParser

    overrides, rest = {}, []
    for arg in argv:
        if arg.startswith("--config."):
            key, sep, value = arg[len("--config.") :].partition("=")
            if not sep:
                raise ConfigError(f"override {arg!r} needs a value: --config.{key}=VALUE")
            overrides[key] = value
        else:
            rest.append(arg)
    parser = ArgumentParser(
        prog=f"vjax {mode}" if mode else "python -m vjax.main",
        description=_PURPOSE[mode] if mode else " ".join(__doc__.split("\n\n")[0].split()),
        epilog=_OVERRIDES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if mode is None:
        parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument(
        "--config",
        default=None,
        help="config file, optionally with :ARG for get_config(ARG) (default: "
        + {
            "eval": "the one the run was trained with)",
            "train": f"the one the run in --workdir was trained with, else {DEFAULT_CONFIG})",
            None: f"{DEFAULT_CONFIG}; for eval and a run in --workdir, the one it was trained "
            "with)",
        }.get(mode, f"{DEFAULT_CONFIG})"),
    )
    parser.add_argument("--workdir", required=True, help="checkpoints, metrics and reports")
    if mode in (None, "eval", "probe"):
        parser.add_argument("--split", default="test", help="split to evaluate (mode=eval|probe)")
    if mode in (None, "demo"):
        parser.add_argument(
            "--audio_visual",
            action="store_true",
            help="demo: MBT on frames + sound beside frames only and sound only (vjax_av_motion)",
        )
    multi = parser.add_argument_group(
        "multi-process (else from VJAX_* variables, or detected on TPU VMs, SLURM and Open MPI)"
    )
    multi.add_argument("--coordinator_address", default=None, help="host:port of process 0")
    multi.add_argument("--num_processes", type=int, default=None)
    multi.add_argument("--process_id", type=int, default=None)
    args = parser.parse_args(rest)
    if mode is not None:
        args.mode = mode
    return args, overrides


def run(argv: Sequence[str], mode: str | None = None) -> int:
    """Runs one mode; a user's mistake raises a :class:`vjax.errors.UserError` (see
    :func:`main`, which prints it as one line)."""
    args, overrides = parse_args(argv, mode)
    if not args.workdir.strip():  # e.g. --workdir=$RUN with RUN unset
        from vjax.errors import UserError

        raise UserError("--workdir is empty; name the folder for checkpoints and reports")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from vjax.config_utils import DEFAULT_CONFIG, apply_overrides, load_config, require_sections

    if args.mode == "demo":
        from vjax.demo import run_demo

        run_demo(args.workdir, args.config or DEFAULT_CONFIG, overrides, args.audio_visual)
        return 0
    from vjax.checkpoint_paths import has_checkpoint, require_trained

    resumes = args.mode == "train" and args.config is None and has_checkpoint(args.workdir)
    if resumes:
        from vjax.train import require_training_run

        require_training_run(args.workdir)  # not a converted model (no dataset to resume on)
    if resumes or (args.mode == "eval" and args.config is None):
        # The run's own model, data and input: evaluating it, or training it on (a resume,
        # --config.train.num_steps raised). vjax probe's --workdir is the encoder to probe
        # (a pre-training run): its classifier's config is --config's, by default the demo's.
        require_trained(args.workdir)
        config = trained_config(args.workdir)
        apply_overrides(config, overrides)
    else:
        config = load_config(args.config or DEFAULT_CONFIG)
        require_sections(config, args.config or DEFAULT_CONFIG)
        apply_overrides(config, overrides)
        if args.mode in ("eval", "probe"):  # at once, before JAX and the dataset load
            require_trained(args.workdir)

    import jax

    from vjax import distributed, train

    # Only training acts on a preemption notice (it saves, then exits); JAX's preemption
    # service would otherwise keep SIGTERM from ending an evaluation of several processes.
    jax.config.update("jax_enable_preemption_service", args.mode == "train")
    distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
    if args.mode in ("eval", "probe") and jax.process_index() == 0:  # it writes the results
        from vjax import storage

        storage.require_writable(args.workdir)  # before the work, not after it
    if args.mode == "train":
        train.train(config, args.workdir)
    elif args.mode == "probe":
        from vjax.probing import encoder_probes, format_probes, write_probes

        result = encoder_probes(config, args.workdir, args.split, jax.process_index() == 0)
        if jax.process_index() == 0:
            print(format_probes(result))
            print(f"wrote {write_probes(result, args.workdir)}")
    else:
        result = train.evaluate_checkpoint(config, args.workdir, args.split)
        if jax.process_index() != 0:  # every process evaluated its shard; one reports
            return 0
        from vjax.evaluate.report import format_eval, write_eval

        print(format_eval(result))
        print("wrote " + ", ".join(write_eval(result, args.workdir)))
    return 0


def main(argv: Sequence[str] | None = None, mode: str | None = None) -> int:
    """Entry point; a user's mistake is one line on stderr and exit code 2 (``--debug``: with
    its traceback)."""
    from vjax.errors import run_guarded

    argv = sys.argv[1:] if argv is None else argv
    return run_guarded(lambda a: run(a, mode), argv, f"vjax {mode}" if mode else "vjax")


if __name__ == "__main__":
    sys.exit(main())
