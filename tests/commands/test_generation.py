"""`tinygpt sample` on a trained run (chat and serve have their own tests beside
generate/ and serve/)."""

from cli_helpers import assert_one_line_error, run_cli


def test_train_then_sample_with_the_same_seed_gives_the_same_text(capsys, trained_run):
    capsys.readouterr()
    args = ["sample", trained_run, "--prompt", "ROMEO:", "--max-new-tokens", "40", "--seed", "7"]
    code, first, _ = run_cli(capsys, *args)
    assert code == 0 and first.startswith("ROMEO:") and len(first) == len("ROMEO:") + 40 + 1
    assert run_cli(capsys, *args)[1] == first
    assert run_cli(capsys, *args[:-1], "8")[1] != first
    exact = run_cli(capsys, *args, "--precision", "float32")[1]  # float16 weights by default
    assert len(exact) == len(first) and run_cli(capsys, *args, "--precision", "float32")[1] == exact


def test_sampling_past_the_context_slides_the_window(capsys, trained_run):
    code, out, _ = run_cli(
        capsys, "sample", trained_run, "--max-new-tokens", "50", "--prompt", "x" * 30
    )  # block_size is 16
    assert code == 0 and len(out) == 30 + 50 + 1


def test_num_samples_prints_that_many_continuations_of_the_prompt(capsys, trained_run):
    args = ["sample", trained_run, "--prompt", "ROMEO:", "--max-new-tokens", "20", "--seed", "3"]
    code, out, _ = run_cli(capsys, *args, "--num-samples", "3")
    samples = out.rstrip("\n").split("\n---------------\n")
    assert code == 0 and len(samples) == 3
    assert all(s.startswith("ROMEO:") and len(s) == len("ROMEO:") + 20 for s in samples)
    assert len(set(samples)) == 3  # different draws, not one copied
    assert run_cli(capsys, *args, "--num-samples", "3")[1] == out  # seeded
    assert_one_line_error(*run_cli(capsys, *args, "--num-samples", "0")[::2], "--num-samples")


def test_prompt_outside_the_vocabulary_is_refused(capsys, trained_run):
    code, _, err = run_cli(capsys, "sample", trained_run, "--prompt", "naïve 中文")
    assert_one_line_error(code, err, "outside the vocabulary", "中")


def test_empty_prompt_is_refused(capsys, trained_run):
    code, _, err = run_cli(capsys, "sample", trained_run, "--prompt", "")
    assert_one_line_error(code, err, "prompt is empty")


def test_corrupted_checkpoint_is_refused(capsys, trained_run):
    weights = trained_run / "checkpoints" / "best" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    code, _, err = run_cli(capsys, "sample", trained_run)
    assert_one_line_error(code, err, "corrupted")


def test_a_tokenizer_file_that_does_not_match_the_model_is_refused(capsys, trained_run, tmp_path):
    from tinygpt.tokenizers.char import CharTokenizer

    CharTokenizer.train("".join(chr(c) for c in range(32, 200))).save(
        trained_run / "tokenizer.json"
    )
    code, _, err = run_cli(capsys, "sample", trained_run)
    assert_one_line_error(code, err, "does not belong to this run")
