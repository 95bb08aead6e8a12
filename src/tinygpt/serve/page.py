"""The chat page served at `/`: one self-contained HTML document (no CDN, no build step) that
streams replies from `/v1/chat/completions` with fetch and a ReadableStream.

It is a Python string rather than an .html file so that it ships with the package whatever the
package-data settings are.
"""

CHAT_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tinygpt chat</title>
<style>
  body { font: 16px/1.45 system-ui, sans-serif; max-width: 46rem; margin: 0 auto; padding: 1rem;
         color: #1d1d1f; background: #fafafa; }
  h1 { font-size: 1.2rem; margin: 0 0 .75rem; }
  #log { min-height: 50vh; padding: .5rem 0; }
  .turn { margin: .4rem 0; padding: .5rem .75rem; border-radius: .5rem; white-space: pre-wrap; }
  .user { background: #dbeafe; margin-left: 4rem; }
  .bot { background: #fff; border: 1px solid #e5e7eb; margin-right: 4rem; }
  .error { background: #fee2e2; }
  form { display: flex; gap: .5rem; margin-top: .5rem; }
  #message { flex: 1; font: inherit; padding: .5rem; }
  .settings { display: flex; gap: 1rem; flex-wrap: wrap; margin-top: .5rem; font-size: .9rem;
              color: #555; }
  .settings input { width: 4.5rem; }
</style>
</head>
<body>
<h1>tinygpt chat <small id="model"></small></h1>
<div id="log"></div>
<form id="form">
  <input id="message" autocomplete="off" placeholder="Say something" autofocus>
  <button id="send">Send</button>
  <button id="stop" type="button" disabled>Stop</button>
  <button id="reset" type="button">Reset</button>
</form>
<div class="settings">
  <label>temperature <input id="temperature" type="number" min="0" max="2" step="0.1"
         value="0.8"></label>
  <label>top_p <input id="top_p" type="number" min="0.01" max="1" step="0.05" value="1"></label>
  <label>max tokens <input id="max_tokens" type="number" min="1" placeholder="auto"></label>
</div>
<script>
"use strict";
const log = document.getElementById("log");
const form = document.getElementById("form");
const input = document.getElementById("message");
const sendButton = document.getElementById("send");
const stopButton = document.getElementById("stop");
let messages = [];
let controller = null;

fetch("v1/models").then(r => r.json()).then(body => {
  document.getElementById("model").textContent = body.data[0].id;
}).catch(() => {});

function addTurn(kind, text) {
  const div = document.createElement("div");
  div.className = "turn " + kind;
  div.textContent = text;
  log.appendChild(div);
  div.scrollIntoView({block: "end"});
  return div;
}

function number(id) {
  const value = document.getElementById(id).value;
  return value === "" ? undefined : Number(value);
}

async function send(text) {
  messages.push({role: "user", content: text});
  addTurn("user", text);
  const bot = addTurn("bot", "");
  controller = new AbortController();
  sendButton.disabled = true;
  stopButton.disabled = false;
  let reply = "";
  try {
    const response = await fetch("v1/chat/completions", {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({messages, stream: true, temperature: number("temperature"),
                            top_p: number("top_p"), max_tokens: number("max_tokens")}),
      signal: controller.signal,
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.error ? body.error.message : response.statusText);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {done, value} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let end;
      while ((end = buffer.indexOf("\\n\\n")) >= 0) {
        const line = buffer.slice(0, end).trim();
        buffer = buffer.slice(end + 2);
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        const delta = chunk.choices.length ? chunk.choices[0].delta : {};
        if (delta.content) {
          reply += delta.content;
          bot.textContent = reply;
          bot.scrollIntoView({block: "end"});
        }
      }
    }
  } catch (err) {
    if (err.name !== "AbortError") {
      bot.classList.add("error");
      bot.textContent = (reply ? reply + "\\n" : "") + "error: " + err.message;
    }
  } finally {
    messages.push({role: "assistant", content: reply});
    controller = null;
    sendButton.disabled = false;
    stopButton.disabled = true;
    input.focus();
  }
}

form.addEventListener("submit", event => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text || controller) return;
  input.value = "";
  send(text);
});
stopButton.addEventListener("click", () => controller && controller.abort());
document.getElementById("reset").addEventListener("click", () => {
  if (controller) controller.abort();
  messages = [];
  log.replaceChildren();
});
</script>
</body>
</html>
"""
