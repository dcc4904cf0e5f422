"""``vjax parity vivit``: every row of the ViViT paper's Table 2 within tolerance."""

import re

from vjax.cli import main

# (row, published params in M, published GFLOPs): ViViT paper, Table 2, B/16x2 at 32x224x224.
TABLE_2 = [
    ("model 1", 88.9, 455.2),
    ("model 2", 115.1, 284.4),
    ("model 3", 117.3, 372.3),
    ("model 4", 88.9, 277.1),
    ("avg-pool", 86.7, 283.9),
]


def test_parity_command_prints_every_table2_row_within_tolerance(capsys):
    assert main(["parity", "vivit"]) == 0
    out = capsys.readouterr().out
    for name, params, gflops in TABLE_2:
        line = next(line for line in out.splitlines() if line.startswith(f"ViViT-B/16x2 {name}"))
        ours_params, published_params = (float(x) for x in re.findall(r"([\d.]+)M", line))
        numbers = [float(x) for x in re.findall(r"\s([\d.]+)\s", line.split("%", 1)[1])]
        ours_gflops, published_gflops = numbers[:2]
        assert published_params == params and published_gflops == gflops, line
        assert abs(ours_params - params) / params <= 0.01, line
        assert abs(ours_gflops - gflops) / gflops <= 0.05, line
        assert line.endswith("yes"), line
    assert "OUT OF TOLERANCE" not in out


def test_timesformer_and_videomae_sizes_match_their_papers():
    from vjax.parity import measure
    from vjax.parity import video_transformers as table

    results = [measure(r, table.PARAMS_TOLERANCE, table.GMACS_TOLERANCE) for r in table.ROWS]
    assert [m.row.name for m in results if not m.ok] == []
    assert len(results) == 4


def test_an_unknown_only_row_is_named_not_checked_as_nothing(capsys):
    """``--only`` with a row the table lacks (a partial name) checked nothing and passed."""
    assert main(["parity", "vivit", "--only", "ViViT-B"]) == 2
    err = capsys.readouterr().err
    assert "vivit has no row 'ViViT-B'; did you mean ViViT-B/16x2 model" in err
