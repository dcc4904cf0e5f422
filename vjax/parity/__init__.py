"""Size parity: our parameter and MAC counts next to the published ones.

``vjax parity FAMILY`` (vivit, video_transformers, conv3d or mbt) builds each published model
at its published input size (abstractly: nothing is allocated), counts parameters and
multiply-accumulates with vjax.flops, prints both next to the paper's numbers and exits
non-zero when any row is out of tolerance. Each family lives in ``vjax/parity/<family>.py``
as a list of rows.

>>> from vjax.parity import run
>>> exit_code = run("vivit")
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from vjax.errors import ArgumentParser, UserError
from vjax.suggest import closest_hint

FAMILIES = ("vivit", "video_transformers", "conv3d", "mbt")


@dataclasses.dataclass(frozen=True)
class PublishedSize:
    """One published model: how to build it here and what its source reports."""

    name: str
    model: dict[str, Any]  # the config's ``model`` section (registry name + fields)
    clip: tuple[int, int, int, int]  # (frames, height, width, channels) it was measured at
    params: float  # published parameter count
    gmacs: float | None  # published GFLOPs (multiply-accumulates), None where not published
    num_classes: int = 400
    audio: tuple[int, int] | None = None  # (frames, mel_bins) for a model that also hears

    @property
    def input_shape(self) -> Any:
        """The model input's shape with a batch of 1 (a dict for audio-visual models)."""
        if self.audio is None:
            return (1, *self.clip)
        return {"video": (1, *self.clip), "audio": (1, *self.audio)}

    @property
    def input_name(self) -> str:
        t, h, w, _ = self.clip
        return f"{t}x{h}x{w}" + (f"+{self.audio[0]}x{self.audio[1]}" if self.audio else "")


@dataclasses.dataclass(frozen=True)
class Measured:
    row: PublishedSize
    params: int
    gmacs: float
    params_ok: bool
    gmacs_ok: bool

    @property
    def ok(self) -> bool:
        return self.params_ok and self.gmacs_ok


def _relative(ours: float, theirs: float) -> float:
    return (ours - theirs) / theirs


def measure(row: PublishedSize, params_tolerance: float, gmacs_tolerance: float) -> Measured:
    """Counts one row's parameters and MACs and compares them with the published figures."""
    from vjax.flops import params_and_macs
    from vjax.models import build_model

    model = build_model(row.model, row.num_classes)
    shape = row.input_shape
    params, macs = params_and_macs(model, shape)
    gmacs = macs / 1e9
    params_ok = abs(_relative(params, row.params)) <= params_tolerance
    gmacs_ok = row.gmacs is None or abs(_relative(gmacs, row.gmacs)) <= gmacs_tolerance
    return Measured(row, params, gmacs, params_ok, gmacs_ok)


def format_table(results: Sequence[Measured], source: str, note: str) -> str:
    """A fixed-width table: name, input, params ours/published, GMACs ours/published."""
    lines = [
        f"{'model':<28} {'input':<18} {'params':>10} {'published':>10} {'diff':>7}"
        f" {'GFLOPs':>8} {'published':>9} {'diff':>7}  ok",
    ]
    for m in results:
        pub_g = f"{m.row.gmacs:9.2f}" if m.row.gmacs is not None else f"{'-':>9}"
        diff_g = (
            f"{100 * _relative(m.gmacs, m.row.gmacs):+6.2f}%"
            if m.row.gmacs is not None
            else " " * 7
        )
        lines.append(
            f"{m.row.name:<28} {m.row.input_name:<18} {m.params / 1e6:9.2f}M"
            f" {m.row.params / 1e6:9.2f}M {100 * _relative(m.params, m.row.params):+6.2f}%"
            f" {m.gmacs:8.2f} {pub_g} {diff_g}  {'yes' if m.ok else 'NO'}"
        )
    lines.append(f"source: {source}")
    lines.append(note)
    return "\n".join(lines)


def run(family: str, names: Sequence[str] = ()) -> int:
    """Prints the parity table of ``family``; returns 1 if any row is out of tolerance."""
    if family not in FAMILIES:
        raise ValueError(f"unknown parity family {family!r}; valid: {', '.join(FAMILIES)}")
    table = importlib.import_module(f"vjax.parity.{family}")
    known = [r.name for r in table.ROWS]
    for name in names:  # an unknown row would check nothing and pass
        if name not in known:
            raise UserError(f"{family} has no row {name!r}{closest_hint(name, known)}")
    rows = [r for r in table.ROWS if not names or r.name in names]
    results = [measure(r, table.PARAMS_TOLERANCE, table.GMACS_TOLERANCE) for r in rows]
    print(format_table(results, table.SOURCE, table.NOTE))
    print(
        f"tolerance: params {100 * table.PARAMS_TOLERANCE:.0f}%, "
        f"GFLOPs {100 * table.GMACS_TOLERANCE:.0f}%"
    )
    bad = [m.row.name for m in results if not m.ok]
    if bad:
        print(f"OUT OF TOLERANCE: {', '.join(bad)}")
    return 1 if bad else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="vjax parity", description=__doc__.split("\n\n")[1])
    parser.add_argument("family", choices=FAMILIES)
    parser.add_argument("--only", nargs="*", default=(), help="row names to check")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return run(args.family, args.only)
