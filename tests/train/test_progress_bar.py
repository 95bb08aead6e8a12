import pytest
from tqdm import tqdm

from tinygpt.train.progress import BAR_FORMAT, bar_postfix


@pytest.mark.parametrize(
    ("step", "total", "seconds"),
    [(12, 5000, 30.0), (12_345, 50_000, 40_000.0), (99_999, 99_999, 3.6e5)],
)
def test_the_training_bar_fits_80_columns_with_all_its_figures(step, total, seconds):
    postfix = bar_postfix(loss=10.4123, tokens_per_second=141_234.0)
    line = tqdm.format_meter(
        step, total, seconds, ncols=80, prefix="train", bar_format=BAR_FORMAT, postfix=postfix
    )
    assert len(line) <= 80
    assert line.endswith(f"{postfix}]")  # nothing cut off
    assert f"{step}/{total}" in line and "loss 10.412" in line and "141.2k tok/s" in line
    assert line.count("|") == 2 and line.index("|") + 6 < line.rindex("|")  # a bar to see
