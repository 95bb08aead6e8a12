import io

from tqdm import tqdm

from tinygpt.config import DataConfig
from tinygpt.data import prepare


class RecordedBar(tqdm):
    """The prepare bar, shown even without a terminal, its last position kept."""

    last: "RecordedBar | None" = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **{**kwargs, "disable": False, "file": io.StringIO()})
        RecordedBar.last = self


def test_the_prepare_bar_ends_at_100_percent(tmp_path, monkeypatch):
    """The total is the source's bytes, separators and accents included; the bar used to count
    characters of the documents alone, and stopped short (98% on TinyStories)."""
    stories = ["Once upon a time, a café.", "The end — naïve über straße.", "日本語 story."] * 30
    source = tmp_path / "stories.txt"
    source.write_text("\n<|endoftext|>\n".join(stories) + "\n", encoding="utf-8")
    monkeypatch.setattr(prepare, "tqdm", RecordedBar)
    config = DataConfig(source=str(source), workers=1, val_fraction=0.2)
    prepare.prepare_dataset(config, out_dir=tmp_path / "prepared")
    bar = RecordedBar.last
    assert bar is not None and bar.total == source.stat().st_size
    assert bar.n == bar.total
