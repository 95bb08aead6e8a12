"""The reply scores by hand: corpus BLEU and distinct-n."""

import pytest

from tinygpt.eval.dialog_replies import corpus_bleu, distinct_n


def test_bleu_and_distinct_n_by_hand():
    reference = "Hello there, how are you today?"
    assert corpus_bleu([reference], [reference]) == pytest.approx(100.0)
    assert corpus_bleu(["nothing alike here"], [reference]) < 10
    assert distinct_n(["a b a b"], 1) == pytest.approx(2 / 4)
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)  # "a b", "b a", "a b"
    assert distinct_n(["a", ""], 2) == 0.0
