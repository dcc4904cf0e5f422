"""``vjax parity conv3d``: every 3D-conv row within 2% of its published params and GFLOPs."""

from vjax.parity import PublishedSize, measure, run


def test_conv3d_parity_rows_are_within_tolerance(capsys):
    assert run("conv3d") == 0
    out = capsys.readouterr().out
    assert "OUT OF TOLERANCE" not in out
    for name in ("R3D-18", "MC3-18", "R(2+1)D-18", "SlowFast R50 8x8", "X3D-M", "I3D R50 8x8"):
        assert name in out
    assert "multiply-accumulates" in out


def test_a_wrong_published_figure_is_flagged():
    """The check can fail: R3D-18 against MC3-18's published size is out of tolerance."""
    row = PublishedSize("wrong", {"name": "r3d_18"}, (16, 112, 112, 3), 11_695_440, 43.34)
    result = measure(row, 0.02, 0.02)
    assert result.params == 33_371_472 and not result.params_ok and not result.ok
