"""The chat page at `/`: self-contained, and streaming a reply in headless Chromium (Playwright
driving Debian's `chromium`, when installed) as the API gives it.
"""

import os
import shutil

import httpx
import openai
import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_chat_page_is_self_contained(server: str):
    response = httpx.get(server)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "v1/chat/completions" in page and "getReader()" in page
    assert "<script src" not in page and "https://" not in page  # no CDN


def chromium_path() -> str:
    """Debian's Chromium (`apt-get install chromium`); CI installs it and sets
    TINYGPT_BROWSER_TESTS=required, so there a missing browser fails instead of skipping."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("TINYGPT_BROWSER_TESTS") == "required":
            pytest.fail("TINYGPT_BROWSER_TESTS=required but no chromium is on PATH")
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    return path


# the closed network refuses Chromium's background connections; these flags stop it trying
CHROMIUM_FLAGS = [
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]

# every text the reply shows while it streams, recorded in the page
RECORD_REPLY = """() => {
  window.replyStates = [];
  new MutationObserver(() => {
    const bot = document.querySelector(".turn.bot");
    if (bot) window.replyStates.push(bot.textContent);
  }).observe(document.getElementById("log"),
             {subtree: true, childList: true, characterData: true});
}"""


GREETINGS = ("Hello!", "How are you today?", "What would you like to eat?", "Where are you going?")


def a_message_with_a_long_reply(client: openai.OpenAI, model_name: str) -> tuple[str, str]:
    """A message and its greedy reply of several characters, so that streaming shows: a model
    trained for seconds answers some messages in one token."""
    for message in GREETINGS:
        reply = client.chat.completions.create(
            model=model_name,
            messages=[{"role": "user", "content": message}],
            temperature=0,
            max_tokens=20,
        )
        text = reply.choices[0].message.content or ""
        if len(text) >= 3:
            return message, text
    pytest.fail(f"the served model answers each of {GREETINGS} in under 3 characters")


def test_the_chat_page_streams_a_reply_in_headless_chromium(
    client: openai.OpenAI, server: str, model_name: str, slowdown: type
):
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    message, expected = a_message_with_a_long_reply(client, model_name)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.goto(server)
            page.wait_for_function(
                f"document.getElementById('model').textContent === '{model_name}'"
            )
            page.fill("#temperature", "0")
            page.fill("#max_tokens", "20")
            page.evaluate(RECORD_REPLY)
            slowdown.seconds = 0.01  # tokens arrive apart, as from a bigger model
            try:
                page.fill("#message", message)
                page.click("#send")
                page.wait_for_function("!document.getElementById('send').disabled", timeout=60_000)
            finally:
                slowdown.seconds = 0.0
            shown = page.text_content(".turn.bot")
            user_turn = page.text_content(".turn.user")
            states = [s for s in page.evaluate("window.replyStates") if s]
        finally:
            browser.close()
    assert user_turn == message
    assert shown == expected  # the page sends what the API gets and joins the stream right
    assert len(set(states)) >= 2 and all(expected.startswith(s) for s in states)  # it streamed
