"""The endpoints, end to end: uvicorn in a background thread (conftest's `server`), the
official `openai` client and httpx.
"""

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest
import torch

from tinygpt.config import RunConfig
from tinygpt.generate.chat import prompt_format_for
from tinygpt.generate.decode import without_padding_ids
from tinygpt.generate.engine import GenerationSettings, stream_text
from tinygpt.model.gpt import GPT
from tinygpt.tokenizers.base import Tokenizer

BLOCK_SIZE = 64  # TINY_DIALOG's
HELLO = [{"role": "user", "content": "Hello!"}]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_models_lists_the_one_model(client: openai.OpenAI, server: str, model_name: str):
    (model,) = client.models.list().data
    assert model.id == model_name
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


def test_completion_streamed_joins_to_the_same_text(client: openai.OpenAI, model_name: str):
    fields = {"model": model_name, "prompt": "Hello", "max_tokens": 20, "seed": 3, "temperature": 1}
    whole = client.completions.create(**fields)
    (choice,) = whole.choices
    assert choice.finish_reason in ("stop", "length")
    assert whole.usage is not None and whole.usage.prompt_tokens == len("Hello")
    assert whole.usage.total_tokens == 5 + whole.usage.completion_tokens
    chunks = list(client.completions.create(**fields, stream=True))
    assert "".join(chunk.choices[0].text for chunk in chunks) == choice.text
    assert chunks[-1].choices[0].finish_reason == choice.finish_reason


def test_chat_completion_streamed_joins_to_the_same_message(client: openai.OpenAI, model_name: str):
    messages = [
        {"role": "system", "content": "ignored: the dialog format has no place for it"},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "How are you?"},
    ]
    fields = {"model": model_name, "messages": messages, "max_tokens": 12, "seed": 4}
    whole = client.chat.completions.create(**fields)
    (choice,) = whole.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == choice.message.content.strip()
    assert whole.usage is not None and whole.usage.completion_tokens <= 12
    chunks = list(
        client.chat.completions.create(
            **fields, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    assert chunks[-1].usage == whole.usage


def test_a_long_chat_history_is_truncated_not_refused(client: openai.OpenAI, model_name: str):
    history = [{"role": role, "content": "Fine, thanks."} for role in ("user", "assistant") * 20]
    reply = client.chat.completions.create(
        model=model_name, messages=[*history, *HELLO], max_tokens=10, seed=1
    )
    assert reply.usage is not None
    assert reply.usage.prompt_tokens + 10 <= BLOCK_SIZE


def test_choices_are_prompt_major_and_equal_separate_requests_seeded_seed_plus_j(
    client: openai.OpenAI,
    model_name: str,
):
    """Choice j of a prompt draws from seed + j: n choices differ, and each equals the prompt
    sent alone with that seed."""
    fields = {"model": model_name, "max_tokens": 12, "temperature": 1.0, "stop": []}
    reply = client.completions.create(**fields, prompt=["Hi", "Hello"], n=2, seed=5)
    assert [choice.index for choice in reply.choices] == [0, 1, 2, 3]
    texts = [choice.text for choice in reply.choices]
    alone = [
        client.completions.create(**fields, prompt=prompt, seed=seed).choices[0].text
        for prompt in ("Hi", "Hello")
        for seed in (5, 6)
    ]
    assert texts == alone
    assert texts[0] != texts[1]
    assert reply.usage is not None and reply.usage.prompt_tokens == len("Hi") + len("Hello")


def model_log_probs(model: GPT, tokenizer: Tokenizer, ids: list[int]) -> torch.Tensor:
    """log p(token | the tokens before it) at every position of `ids`, straight from the model."""
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0]  # (T, V)
    return without_padding_ids(logits, tokenizer.vocab_size).log_softmax(-1)


def test_echo_with_logprobs_scores_the_prompt_with_the_models_own_log_softmax(
    client: openai.OpenAI, served: tuple[GPT, Tokenizer, RunConfig], model_name: str
):
    """What lm-eval-harness sends to score a text: max_tokens 0 (or 1), echo, logprobs."""
    model, tokenizer, _ = served
    prompt = "Hello there, how are you?"
    ids = tokenizer.encode(prompt)
    expected = model_log_probs(model, tokenizer, ids)
    reply = client.completions.create(
        model=model_name, prompt=prompt, max_tokens=0, echo=True, logprobs=2
    )
    (choice,) = reply.choices
    assert choice.text == prompt and choice.logprobs is not None
    logprobs = choice.logprobs
    assert logprobs.tokens == list(prompt)  # a character vocabulary
    assert logprobs.text_offset == list(range(len(prompt)))
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    wanted = expected[:-1].gather(-1, torch.tensor(ids[1:]).view(-1, 1)).view(-1)
    assert logprobs.token_logprobs[1:] == pytest.approx(wanted.tolist(), abs=1e-4)
    for position, top in enumerate(logprobs.top_logprobs[1:]):
        values, top_ids = expected[position].topk(2)
        wanted_top = {
            tokenizer.decode([i]): v for i, v in zip(top_ids.tolist(), values.tolist(), strict=True)
        }
        wanted_top[prompt[position + 1]] = wanted[position].item()  # and the token itself
        assert top == pytest.approx(wanted_top, abs=1e-4)
    # the same prompt as token ids, as a harness that tokenizes for itself sends it, with the
    # one greedy token lm-eval asks for: its log-probability is the model's largest
    greedy = client.completions.create(
        model=model_name, prompt=[ids], max_tokens=1, echo=True, logprobs=1, temperature=0
    ).choices[0]
    assert greedy.logprobs is not None and len(greedy.logprobs.tokens) == len(ids) + 1
    assert greedy.logprobs.token_logprobs[1:-1] == pytest.approx(logprobs.token_logprobs[1:])
    last = greedy.logprobs.token_logprobs[-1]
    assert last == pytest.approx(expected[-1].max().item(), abs=1e-4)
    assert max(greedy.logprobs.top_logprobs[-1].values()) == last  # lm-eval's is_greedy


def test_streamed_choices_with_logprobs_join_to_the_whole_response(
    client: openai.OpenAI, model_name: str
):
    fields = {
        "model": model_name, "prompt": ["Hi", "Hello"], "n": 2, "seed": 3, "max_tokens": 8,
        "echo": True, "logprobs": 2, "stop": [],
    }  # fmt: skip
    whole = client.completions.create(**fields)
    streamed: dict[int, dict[str, list]] = {}
    for chunk in client.completions.create(**fields, stream=True):
        (choice,) = chunk.choices
        joined = streamed.setdefault(choice.index, {"text": [], "tokens": [], "offsets": []})
        joined["text"].append(choice.text)
        if choice.logprobs is not None:
            joined["tokens"] += choice.logprobs.token_logprobs
            joined["offsets"] += choice.logprobs.text_offset
    for choice in whole.choices:
        assert choice.logprobs is not None
        joined = streamed[choice.index]
        assert "".join(joined["text"]) == choice.text
        assert joined["tokens"] == choice.logprobs.token_logprobs
        assert joined["offsets"] == choice.logprobs.text_offset
        assert len(choice.logprobs.tokens) == len(choice.text)  # echo: prompt, then reply


def test_chat_logprobs_list_every_drawn_token_with_its_bytes_and_top_alternatives(
    client: openai.OpenAI, served: tuple[GPT, Tokenizer, RunConfig], model_name: str
):
    model, tokenizer, _ = served
    fields = {
        "model": model_name, "messages": HELLO, "max_completion_tokens": 6, "temperature": 0,
        "logprobs": True, "top_logprobs": 2, "n": 2,
    }  # fmt: skip
    whole = client.chat.completions.create(**fields)
    assert whole.usage is not None and whole.usage.completion_tokens <= 12
    first, second = whole.choices
    assert first.message.content == second.message.content  # greedy: n equal choices
    assert first.logprobs is not None and first.logprobs.content is not None
    content = first.logprobs.content
    assert 2 * len(content) == whole.usage.completion_tokens
    for entry in content:
        assert entry.bytes == list(entry.token.encode("utf-8"))
        assert [top.logprob for top in entry.top_logprobs] == sorted(
            (top.logprob for top in entry.top_logprobs), reverse=True
        )
        assert (entry.token, entry.logprob) == (
            entry.top_logprobs[0].token,
            entry.top_logprobs[0].logprob,
        )
    # the first token's log-probability is the model's at the end of the prompt
    prompt_ids = prompt_format_for(tokenizer).render([], HELLO[0]["content"], tokenizer)
    expected = model_log_probs(model, tokenizer, prompt_ids)[-1]
    assert content[0].logprob == pytest.approx(expected.max().item(), abs=1e-4)
    streamed: dict[int, list] = {}
    for chunk in client.chat.completions.create(**fields, stream=True):
        for choice in chunk.choices:
            if choice.logprobs is not None and choice.logprobs.content:
                streamed.setdefault(choice.index, []).extend(choice.logprobs.content)
    assert streamed[0] == content and streamed[1] == second.logprobs.content


def test_presence_and_frequency_penalties_change_the_reply_as_the_engine_defines(
    client: openai.OpenAI, served: tuple[GPT, Tokenizer, RunConfig], model_name: str
):
    model, tokenizer, _ = served
    penalties = {"presence_penalty": 1.0, "frequency_penalty": 2.0}
    fields = {"model": model_name, "prompt": "Hello", "max_tokens": 20, "temperature": 0}
    penalised = client.completions.create(**fields, **penalties).choices[0].text
    plain = client.completions.create(**fields).choices[0].text
    settings = GenerationSettings(20, temperature=0, **penalties)
    assert penalised == stream_text(model, tokenizer, "Hello", settings).text()
    assert penalised != plain


@pytest.mark.parametrize("prompt", ["Hello", "Hello! " * 15])
def test_a_completion_past_the_context_slides_as_tinygpt_sample_does(
    client: openai.OpenAI, served: tuple[GPT, Tokenizer, RunConfig], prompt: str, model_name: str
):
    """A reply longer than the context, from a short prompt or one longer than the context:
    what `tinygpt sample` (stream_text) gives, once refused with 400."""
    model, tokenizer, _ = served
    tokens = BLOCK_SIZE + 20
    reply = client.completions.create(
        model=model_name, prompt=prompt, max_tokens=tokens, temperature=0,
        extra_body={"min_tokens": tokens},  # no end-of-text before the context is passed
    )  # fmt: skip
    assert reply.usage is not None and reply.usage.completion_tokens == tokens
    settings = GenerationSettings(tokens, min_new_tokens=tokens, temperature=0)
    assert reply.choices[0].text == stream_text(model, tokenizer, prompt, settings).text()


def error_of(response: httpx.Response) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return error


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("completions", {"prompt": "Hi", "logit_bias": {"1": 5}}, 400, "logit_bias"),
        ("completions", {"prompt": ""}, 400, "prompt"),
        ("completions", {"prompt": []}, 400, "prompt"),
        ("completions", {"prompt": ["Hi", ""]}, 400, "prompt"),
        ("completions", {"max_tokens": 5}, 400, "prompt"),
        ("completions", {"prompt": "Hi", "max_tokens": 0}, 400, "max_tokens"),
        ("completions", {"prompt": "Hi", "max_tokens": 65_537}, 400, "max_tokens"),
        ("completions", {"prompt": "Hi", "temperature": 2.5}, 400, "temperature"),
        ("completions", {"prompt": "Hi", "temperature": -1}, 400, "temperature"),
        ("completions", {"prompt": "Hi", "top_p": 0}, 400, "top_p"),
        ("completions", {"prompt": "Hi", "top_p": 1.5}, 400, "top_p"),
        ("completions", {"prompt": "Hi", "n": 0}, 400, "n"),
        ("completions", {"prompt": "Hi", "n": 65}, 400, "n"),
        ("completions", {"prompt": ["Hi"] * 33, "n": 2}, 400, "n"),
        ("completions", {"prompt": "Hi", "logprobs": 21}, 400, "logprobs"),
        ("completions", {"prompt": "Hi", "presence_penalty": 2.5}, 400, "presence_penalty"),
        ("completions", {"prompt": "Hi", "frequency_penalty": -3}, 400, "frequency_penalty"),
        ("completions", {"prompt": "Hi", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
        ("completions", {"prompt": "Hi", "stop": [""]}, 400, "stop"),
        ("completions", {"prompt": "Hi", "min_tokens": 9, "max_tokens": 4}, 400, "min_tokens"),
        ("completions", {"prompt": "Hi", "model": "gpt-4"}, 404, "model"),
        ("completions", {"prompt": "\u4e00"}, 400, None),  # not in the char vocabulary
        ("chat/completions", {"messages": []}, 400, "messages"),
        ("chat/completions", {"messages": [{"role": "assistant", "content": "Hi"}]}, 400, None),
        ("chat/completions", {"messages": [{"role": "tool", "content": "Hi"}]}, 400, None),
        ("chat/completions", {"messages": [{"role": "user", "content": " "}]}, 400, "messages"),
        ("chat/completions", {"messages": [{"role": "user", "text": "Hi"}]}, 400, None),
        ("chat/completions", {"messages": HELLO, "max_tokens": 0}, 400, "max_tokens"),
        ("chat/completions", {"messages": HELLO, "echo": True}, 400, "echo"),
        ("chat/completions", {"messages": HELLO, "top_logprobs": 2}, 400, "top_logprobs"),
        (
            "chat/completions",
            {"messages": HELLO, "max_tokens": 5, "max_completion_tokens": 6},
            400,
            "max_completion_tokens",
        ),
        ("chat/completions", {"messages": [{"role": "user", "content": "x" * 60}]}, 400, None),
    ],
)
def test_bad_requests_get_a_4xx_in_openai_error_shape(
    server: str, path: str, body: dict[str, Any], status: int, param: str | None
):
    error = error_of(httpx.post(f"{server}/v1/{path}", json=body))
    assert httpx.post(f"{server}/v1/{path}", json=body).status_code == status
    if param is not None:
        assert error["param"] == param


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b""])
def test_a_body_that_is_not_a_json_object_gets_400(server: str, content: bytes):
    response = httpx.post(
        f"{server}/v1/completions", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    error_of(response)


def test_a_message_that_cannot_fit_says_the_context_is_exceeded(server: str):
    body = {"messages": [{"role": "user", "content": "x" * 60}]}
    error = error_of(httpx.post(f"{server}/v1/chat/completions", json=body))
    assert error["code"] == "context_length_exceeded"


def test_eight_concurrent_streaming_clients_all_finish(client: openai.OpenAI, model_name: str):
    def chat(seed: int) -> tuple[str, str | None]:
        stream = client.chat.completions.create(
            model=model_name, messages=HELLO, max_tokens=20, seed=seed, stream=True
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return text, chunks[-1].choices[0].finish_reason

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(chat, range(8)))
    logging.getLogger(__name__).info("8 streaming clients: %.2f s", time.perf_counter() - start)
    assert all(reason in ("stop", "length") for _, reason in results)
    assert results[3] == chat(3)  # served one at a time, so concurrency changes nothing


def test_a_client_that_leaves_mid_stream_frees_the_worker(
    client: openai.OpenAI,
    server: str,
    caplog: pytest.LogCaptureFixture,
    model_name: str,
    slowdown: type,
):
    slowdown.seconds = 0.05  # 60 tokens would take 3 s
    try:
        with caplog.at_level(logging.INFO, logger="tinygpt.serve.worker"):
            stream = client.completions.create(
                model=model_name, prompt="Hi", max_tokens=60, stream=True, stop=[]
            )
            next(iter(stream))
            health = httpx.get(f"{server}/health").json()
            assert (health["running"], health["waiting"]) == (1, 0)
            stream.close()
            after = client.completions.create(model=model_name, prompt="Hi", max_tokens=2)
    finally:
        slowdown.seconds = 0.0
    assert after.choices[0].finish_reason in ("stop", "length")
    stopped = [r.getMessage() for r in caplog.records if "client gone" in r.getMessage()]
    assert len(stopped) == 1
    assert int(stopped[0].split("after ")[1].split()[0]) < 60


def test_unknown_paths_answer_in_the_error_shape(server: str):
    response = httpx.get(f"{server}/v1/nothing")
    assert response.status_code == 404
    error_of(response)
