/**
 * Asking: the composer, streamed answers (fetch + ReadableStream over SSE), and Retry for a
 * question left without an answer when the providers were unavailable.
 */
import { el, icon, readEvents, request, showNotice } from "../app.js";
import { pollTitle } from "./header.js";
import { listItem, placeOnTop, renderListItem } from "./list.js";
import { nearBottom, renderMessage, scrollToBottom } from "./messages.js";
import { ICONS, dom, state } from "./state.js";

/** Questions without an answer after them (the providers were down) get a Retry button. */
export function markUnanswered() {
  const items = [...dom.messageList.children];
  items.forEach((item, index) => {
    const next = items[index + 1];
    const unanswered = item.dataset.role === "user" && item.dataset.id && !item.classList.contains("pending")
      && (!next || next.dataset.role === "user");
    if (unanswered && !item.querySelector(".retry-row")) addRetry(item, "No answer yet.");
    if (!unanswered) item.querySelector(".retry-row")?.remove();
  });
}

function addRetry(item, reason) {
  item.querySelector(".retry-row")?.remove();
  const button = el("button", { type: "button", class: "button small retry-button" }, icon(ICONS.retry), "Retry");
  button.addEventListener("click", () => retry(item));
  item.append(el("div", { class: "retry-row" }, el("span", { class: "retry-reason", text: reason }), button));
}

function setBusy(busy) {
  state.streaming = busy;
  dom.sendButton.disabled = busy;
  dom.messageList.setAttribute("aria-busy", busy ? "true" : "false");
  for (const button of dom.messageList.querySelectorAll(".retry-button")) button.disabled = busy;
}

async function send() {
  const content = dom.composerInput.value.trim();
  if (!content || !state.current || state.streaming) return;
  const id = state.current.id;
  setBusy(true);
  await state.historyReady; // so that the first page of history cannot arrive after, and repeat, this question
  const conversation = state.current;
  if (!conversation || conversation.id !== id) {
    setBusy(false);
    return;
  }
  dom.historyStatus.textContent = "";
  const question = renderMessage({ role: "user", content });
  question.classList.add("pending");
  dom.messageList.append(question);
  scrollToBottom();
  dom.composerInput.value = "";
  try {
    const response = await request(`/api/conversations/${encodeURIComponent(conversation.id)}/messages`, {
      method: "POST", json: { content, stream: true }, headers: { Accept: "text/event-stream" }, raw: true,
    });
    await streamAnswer(response, question, conversation);
  } catch (err) {
    if (err.code === "providers_unavailable" && err.details && err.details.message_id) {
      question.dataset.id = String(err.details.message_id);
      question.classList.remove("pending");
      addRetry(question, err.message);
      scrollToBottom();
    } else {
      question.remove();
      if (!dom.composerInput.value) dom.composerInput.value = content;
      if (err.status !== 401) showNotice(err.message);
    }
  } finally {
    setBusy(false);
  }
}

async function retry(question) {
  const conversation = state.current;
  if (!conversation || state.streaming || !question.dataset.id) return;
  setBusy(true);
  const row = question.querySelector(".retry-row");
  if (row) row.querySelector(".retry-reason").textContent = "Asking again…";
  try {
    const response = await request(
      `/api/conversations/${encodeURIComponent(conversation.id)}/messages/${encodeURIComponent(question.dataset.id)}/retry`,
      { method: "POST", json: { stream: true }, headers: { Accept: "text/event-stream" }, raw: true },
    );
    await streamAnswer(response, question, conversation);
  } catch (err) {
    if (err.status !== 401) addRetry(question, err.message);
  } finally {
    setBusy(false);
  }
}

/** Show an answer as its Server-Sent Events arrive: start, delta..., then end or error. */
async function streamAnswer(response, question, conversation) {
  let answer = null;
  let text = null;
  let deltas = 0;
  let finished = false;
  const insertAfterQuestion = (node) => {
    if (question.isConnected) question.after(node);
    else dom.messageList.append(node);
  };
  await readEvents(response, (name, data) => {
    if (name === "start") {
      if (data.message && data.message.id) question.dataset.id = String(data.message.id);
      question.classList.remove("pending");
      question.querySelector(".retry-row")?.remove();
      answer = renderMessage({ role: "assistant", content: "", provider: data.provider, model: data.model, cached: data.cached });
      answer.classList.add("streaming");
      answer.dataset.deltas = "0";
      text = answer.querySelector(".message-text").firstChild;
      insertAfterQuestion(answer);
      scrollToBottom();
    } else if (name === "delta" && text) {
      const stick = nearBottom();
      text.appendData(typeof data.text === "string" ? data.text : "");
      deltas += 1;
      answer.dataset.deltas = String(deltas);
      if (stick) scrollToBottom();
    } else if (name === "end") {
      finished = true;
      const stored = renderMessage(data.message);
      if (answer) answer.replaceWith(stored);
      else insertAfterQuestion(stored);
      answer = stored;
      scrollToBottom();
      answered(conversation);
    } else if (name === "error") {
      finished = true;
      const partial = data.answer ? renderMessage(data.answer) : null;
      if (partial) {
        if (answer) answer.replaceWith(partial);
        else insertAfterQuestion(partial);
        answer = partial;
      } else if (answer) {
        answer.classList.remove("streaming");
      }
      const note = el("p", { class: "message-error", text: data.message || "The answer was cut off." });
      (answer || question).append(note);
      showNotice(data.message || "The answer was cut off.");
      answered(conversation);
    }
  });
  if (!finished) {
    if (answer) {
      answer.classList.remove("streaming");
      answer.classList.add("incomplete");
      answer.append(el("p", { class: "message-error", text: "The connection closed before the answer was complete." }));
    } else {
      addRetry(question, "The connection closed before Luca answered.");
    }
  }
}

/** After an answer: the conversation moves up the list, and its title is awaited if it has none. */
function answered(conversation) {
  const known = state.conversations.get(conversation.id) || conversation;
  const updated = { ...known, updated_at: new Date().toISOString() };
  state.conversations.set(updated.id, updated);
  const item = listItem(updated.id);
  if (item) item.replaceWith(renderListItem(updated));
  placeOnTop(updated);
  if (!updated.title) pollTitle(updated.id);
}

/** Wire the composer: the Send button, and Enter to send (Shift+Enter for a new line). */
export function setupComposer() {
  dom.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  dom.composerInput.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
}
