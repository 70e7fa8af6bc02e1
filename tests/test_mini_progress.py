"""The mini build's progress lines: first and last step always, then at most one line per interval."""
from qscope_utils.mini.progress import ProgressLine, fmt_seconds


def test_progress_lines(capsys):
    b = ProgressLine("pretrain balanced", 10, 110, every_s=3600)
    for i in range(10, 110):
        b.tick(i, loss=2.5, tok_per_s=12345.0)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert out[0].startswith("[pretrain balanced] step 11/110 (10%)") and "loss 2.500" in out[0]
    assert "tok_per_s 12,345" in out[0] and "ETA" in out[0]
    assert out[1].startswith("[pretrain balanced] step 110/110 (100%)") and "ETA 0m00s" in out[1]


def test_progress_every_zero_prints_each_step_and_disabled_prints_nothing(capsys):
    b = ProgressLine("sae layer 3", 0, 4, every_s=0)
    for i in range(4):
        b.tick(i, fvu=0.2)
    off = ProgressLine("x", 0, 4, enabled=False)
    for i in range(4):
        off.tick(i)
    assert len(capsys.readouterr().out.splitlines()) == 4
    assert fmt_seconds(3725) == "1h02m" and fmt_seconds(65) == "1m05s"
