import io
from pathlib import Path

import pytest
from cli_helpers import DAILYDIALOG, TINY_DIALOG

from tinygpt.cli import main
from tinygpt.config import ModelConfig
from tinygpt.data.chat_format import Conversation, history_prompt
from tinygpt.errors import ConfigError, DataError
from tinygpt.generate.chat import (
    DIALOG,
    TRANSCRIPT,
    ChatSession,
    fit_prompt,
    run_terminal_chat,
    trim_reply,
)
from tinygpt.generate.engine import GenerationSettings
from tinygpt.model.gpt import GPT
from tinygpt.tokenizers.char import CharTokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dialog_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A chat model trained for seconds on DailyDialog's validation dialogues."""
    run_dir = tmp_path_factory.mktemp("runs") / "dialog"
    assert main(["train", "--data", str(DAILYDIALOG), "--out", str(run_dir), *TINY_DIALOG]) == 0
    return run_dir


@pytest.fixture
def session() -> ChatSession:
    """An untrained model is enough to check prompts: only block_size and the tokenizer count."""
    tokenizer = CharTokenizer.train(
        "<s> User: <sep> Bot: </s>\nabcdefghijklmnopqrstuvwxyz0123456789"
    )
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size, block_size=128, n_layer=2, n_head=2, n_embd=32
    )
    return ChatSession(GPT(config), tokenizer, GenerationSettings(max_new_tokens=40, seed=1))


def decoded_prompt(session: ChatSession, message: str) -> str:
    return session.tokenizer.decode(session.prompt_ids(message))


def test_prompt_is_the_history_then_the_new_message(session: ChatSession):
    session.add_turn("hi", "hello")
    assert decoded_prompt(session, "how are you") == (
        "<s> User: hi <sep> Bot: hello </s>\n<s> User: how are you <sep> Bot:"
    )


def test_history_truncation_keeps_the_newest_turns(session: ChatSession):
    for i in range(1, 6):
        session.add_turn(f"u{i}", f"b{i}")  # 31 characters a turn, plus a newline
    prompt = decoded_prompt(session, "new")  # 128 - 40 leaves 88: two turns and the message
    assert prompt == "<s> User: u4 <sep> Bot: b4 </s>\n<s> User: u5 <sep> Bot: b5 </s>\n" + (
        "<s> User: new <sep> Bot:"
    )
    assert len(session.prompt_ids("new")) <= session.block_size - session.settings.max_new_tokens


def test_a_message_longer_than_the_context_keeps_its_last_tokens(session: ChatSession):
    session.add_turn("hi", "hello")
    ids = session.prompt_ids("a" * 200 + "z")
    assert len(ids) == 128 - 40
    assert session.tokenizer.decode(ids).endswith("aaz <sep> Bot:")


def test_fit_prompt_can_refuse_a_message_that_does_not_fit(session: ChatSession):
    with pytest.raises(DataError, match="the last message takes 207 tokens"):
        fit_prompt([], "a" * 186, session.tokenizer, budget=88, cut_long_message=False)
    ids, dropped = fit_prompt([("u", "b")] * 9, "hi", session.tokenizer, budget=88)
    assert dropped == 7
    assert ids == history_prompt(Conversation((("u", "b"),) * 2), "hi", session.tokenizer)


def test_replies_stop_at_the_chat_markers(session: ChatSession):
    assert session.format == DIALOG
    assert {"</s>", "<s>", "User:"} <= set(session.settings.stop)
    assert session.settings.stop_at_end_of_text


def test_a_tokenizer_without_the_markers_chats_in_a_plain_transcript():
    tokenizer = CharTokenizer.train("User: Bot:\nhi there")
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16
    )
    session = ChatSession(GPT(config), tokenizer, GenerationSettings(max_new_tokens=20))
    session.add_turn("hi", "there")
    assert session.format == TRANSCRIPT
    assert decoded_prompt(session, "hi") == "User: hi\nBot: there\nUser: hi\nBot:"
    assert "\n" in session.settings.stop


@pytest.mark.parametrize("pieces", [[" Hi", " there ", " "], ["  ", "\n", "a", " b  "], []])
def test_trimmed_reply_pieces_join_to_the_stripped_reply(pieces: list[str]):
    assert "".join(trim_reply(pieces)) == "".join(pieces).strip()


def test_reset_and_setting_commands(session: ChatSession):
    session.add_turn("hi", "hello")
    commands = "/temp 0.7\n/top_k 5\n/top_p 0.9\n/max_tokens 30\n/temp hot\n/top_p 2\n/reset\n"
    out = io.StringIO()
    assert run_terminal_chat(session, io.StringIO(commands + "/quit\n"), out) == 0
    assert session.history == []
    settings = session.settings
    assert (settings.temperature, settings.top_k, settings.top_p) == (0.7, 5, 0.9)
    assert settings.max_new_tokens == 30
    assert "/temp needs a number" in out.getvalue()
    assert "top_p=2.0 must be in (0, 1]" in out.getvalue()


def test_a_reply_budget_that_fills_the_context_is_refused(session: ChatSession):
    with pytest.raises(ConfigError, match="max_new_tokens=128 must be between 1 and 127"):
        session.update(max_new_tokens=128)
    assert session.settings.max_new_tokens == 40


def test_ctrl_c_ends_the_chat_cleanly(session: ChatSession):
    class Interrupted(io.StringIO):
        def readline(self, size: int = -1) -> str:
            raise KeyboardInterrupt

    assert run_terminal_chat(session, Interrupted(), io.StringIO()) == 0


def test_a_message_the_tokenizer_cannot_encode_is_one_line_and_the_chat_goes_on(
    session: ChatSession,
):
    out = io.StringIO()
    assert run_terminal_chat(session, io.StringIO("HELLO\nhi\n"), out) == 0
    assert "error: text has characters outside the vocabulary" in out.getvalue()
    assert [user for user, _ in session.history] == ["hi"]


def chat(capsys, monkeypatch, run_dir: Path, lines: str, *flags: str) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    code = main(["chat", str(run_dir), "--max-new-tokens", "20", *flags])
    out, err = capsys.readouterr()
    return code, out, err


def test_terminal_chat_on_a_trained_run_replies_and_exits_on_eof(
    capsys, monkeypatch, dialog_run: Path
):
    code, out, err = chat(capsys, monkeypatch, dialog_run, "Hello!\nHow are you?\n", "--seed", "3")
    assert code == 0
    assert out.count("Bot: ") == 2
    assert "warning" not in err


def test_same_seed_same_reply(capsys, monkeypatch, dialog_run: Path):
    flags = ("--seed", "5", "--temperature", "1")
    code, first, _ = chat(capsys, monkeypatch, dialog_run, "Hello!\nHow are you?\n", *flags)
    assert code == 0
    assert chat(capsys, monkeypatch, dialog_run, "Hello!\nHow are you?\n", *flags)[1] == first


def test_chat_with_a_plain_text_model_warns_first(
    capsys, monkeypatch, tmp_path: Path, small_text_file: Path
):
    run_dir = tmp_path / "text"
    tiny = ["--block_size", "32", "--n_layer", "1", "--n_head", "2", "--n_embd", "16"]
    steps = ["--max_iters", "2", "--eval_interval", "2", "--eval_iters", "1", "--batch_size", "2"]
    assert (
        main(["train", "--data", str(small_text_file), "--out", str(run_dir), *tiny, *steps]) == 0
    )
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n"))
    assert main(["chat", str(run_dir), "--max-new-tokens", "4"]) == 0
    out, err = capsys.readouterr()
    assert err.count("warning") == 1 and "plain text" in err
    assert "Bot: " in out


def interrupted_after(pieces: list[str]):
    """A reply stream that yields `pieces`, then gets Ctrl-C."""

    def reply(message: str):
        yield from pieces
        raise KeyboardInterrupt

    return reply


def test_ctrl_c_during_a_reply_stops_only_the_reply(session: ChatSession, monkeypatch):
    monkeypatch.setattr(session, "reply", interrupted_after(["Hel", "lo"]))
    out = io.StringIO()
    assert run_terminal_chat(session, io.StringIO("hi\n/quit\n"), out) == 0
    assert "Bot: Hello [stopped]\nYou: " in out.getvalue()  # the chat went on to the next line
    assert session.history == []  # a reply cut short is not remembered
    monkeypatch.undo()
    assert run_terminal_chat(session, io.StringIO("hi\n"), io.StringIO()) == 0
    assert [user for user, _ in session.history] == ["hi"]


def test_ctrl_c_at_a_terminal_prompt_clears_the_line_and_ctrl_d_quits(
    session: ChatSession, monkeypatch
):
    typed = iter([KeyboardInterrupt, "hi", EOFError])

    def terminal_input(prompt: str) -> str:
        answer = next(typed)
        if isinstance(answer, type):
            raise answer
        return answer

    monkeypatch.setattr("tinygpt.generate.chat._is_terminal", lambda *streams: True)
    monkeypatch.setattr("builtins.input", terminal_input)
    assert run_terminal_chat(session, io.StringIO(), io.StringIO()) == 0
    assert [user for user, _ in session.history] == ["hi"]  # the chat went on after Ctrl-C
