"""``python -m vjax.main --mode=train|eval|demo --config=FILE[:ARG] --workdir=DIR [--config.K=V]``.

The ``vjax`` command (``vjax train ...``) is the same entry point with the mode as a verb.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

MODES = ("train", "eval", "demo")


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, dict[str, str]]:
    """Splits ``--config.x.y=v`` overrides from the ordinary flags."""
    overrides, rest = {}, []
    for arg in argv:
        if arg.startswith("--config."):
            key, sep, value = arg[len("--config.") :].partition("=")
            if not sep:
                raise SystemExit(f"override {arg!r} needs a value: --config.{key}=VALUE")
            overrides[key] = value
        else:
            rest.append(arg)
    parser = argparse.ArgumentParser(prog="vjax", description=__doc__)
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument(
        "--config",
        default="configs/demo.py",
        help="config file, optionally with :ARG for get_config(ARG)",
    )
    parser.add_argument("--workdir", required=True, help="checkpoints, metrics and reports")
    parser.add_argument("--split", default="test", help="split to evaluate (mode=eval)")
    multi = parser.add_argument_group(
        "multi-process (else from VJAX_* variables, or detected on TPU VMs, SLURM and Open MPI)"
    )
    multi.add_argument("--coordinator_address", default=None, help="host:port of process 0")
    multi.add_argument("--num_processes", type=int, default=None)
    multi.add_argument("--process_id", type=int, default=None)
    return parser.parse_args(rest), overrides


def main(argv: Sequence[str] | None = None) -> int:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from vjax.config_utils import ConfigError, apply_overrides, load_config

    try:
        if args.mode == "demo":
            from vjax.demo import run_demo

            run_demo(args.workdir, args.config, overrides)
            return 0
        config = load_config(args.config)
        apply_overrides(config, overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2

    import jax

    from vjax import distributed, train

    distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
    if args.mode == "train":
        train.train(config, args.workdir)
    else:
        result = train.evaluate_checkpoint(config, args.workdir, args.split)
        if jax.process_index() != 0:  # every process evaluated its shard; one reports
            return 0
        from vjax.report import format_eval

        print(format_eval(result))
        path = os.path.join(args.workdir, f"eval_{args.split}_step{result['step']}.json")
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
