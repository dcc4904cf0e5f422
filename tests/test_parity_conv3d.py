"""``vjax parity conv3d``: every 3D-conv row within 2% of its published params and GFLOPs."""

from vjax.parity import PublishedSize, conv3d, measure, run


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


def test_csn_macs_equal_fvcores_conv_count_of_pytorchvideos_net():
    """CSN R101's published 75.62 GFLOPs adds a training-mode BatchNorm count (see the NOTE),
    so its row checks params only; our MACs must equal fvcore 0.1.5's conv + linear count of
    pytorchvideo's ``csn_r101`` at 32x256x256 (73.7533 + 0.0008), and the params its 22.21M."""
    (row,) = [r for r in conv3d.ROWS if r.model == {"name": "csn_r101"}]
    result = measure(row, conv3d.PARAMS_TOLERANCE, conv3d.GMACS_TOLERANCE)
    assert result.params == 22_213_776 and result.ok
    assert abs(result.gmacs - (73.7533 + 0.0008)) < 1e-3
