"""``vjax bench data --tiny``: the table's structure and the BENCHMARKS.md section update."""

import re

from vjax.bench import update_benchmarks
from vjax.cli import main

ROWS = [
    r"pipeline frames/s per core \(24x24 train clips\)",
    r"plain PyAV decoded frames/s per core \(source files, rgb24\)",
    r"plain PyAV clip frames/s per core \(one clip per file\)",
    r"ratio pipeline / PyAV, clip frames",
    r"ratio pipeline / PyAV, decoded frames",
    r"clips/s, 1 worker",
    r"clips/s, 2 workers",
    r"scaling 2 vs 1 workers",
    r"prepare \(decode \+ JPEG\) videos/s, all workers",
]


def test_bench_data_tiny_prints_and_records_the_table(tmp_path, capsys):
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\n## models\n\nkeep me\n\n## vjax bench data\n\nold table\n")
    assert main(["bench", "data", "--tiny", f"--out={out}"]) == 0
    printed = capsys.readouterr().out
    for row in ROWS:
        assert re.search(rf"^\| {row} +\| [0-9.]+x? \|$", printed, re.M), row
    text = out.read_text()
    assert "keep me" in text and "old table" not in text
    assert (
        text.count("## vjax bench data") == 1 and text.count("| ratio pipeline / PyAV, clip") == 1
    )
    update_benchmarks(str(out), "vjax bench data", "new body")
    update_benchmarks(str(out), "other", "x")
    text = out.read_text()
    assert text.count("## vjax bench data") == 1 and "new body" in text and "keep me" in text
    assert text.index("## models") < text.index("## vjax bench data") < text.index("## other")
    assert main(["bench", "nothing"]) == 2
