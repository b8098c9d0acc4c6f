/**
 * One message as the page shows it (its content only ever a text node), and the message pane's
 * scrolling, shared by the history and the composer.
 */
import { el, longTime, shortTime } from "../app.js";
import { dom } from "./state.js";

function metaParts(message) {
  const parts = [];
  if (message.provider) parts.push(el("span", { class: "meta-provider", text: message.provider }));
  if (message.model) parts.push(el("span", { class: "meta-model", text: message.model }));
  if (message.cached) parts.push(el("span", { class: "meta-cached", text: "served from cache" }));
  if (message.status === "incomplete") parts.push(el("span", { class: "meta-incomplete", text: "incomplete" }));
  if (message.created_at) {
    parts.push(el("time", { datetime: message.created_at, title: longTime(message.created_at), text: shortTime(message.created_at) }));
  }
  return parts;
}

/** One message as a list item; its content is a text node, never HTML. */
export function renderMessage(message) {
  const fromUser = message.role === "user";
  const text = document.createTextNode(message.content || "");
  const item = el("li", {
    class: `message ${fromUser ? "from-user" : "from-luca"}`,
    dataset: { role: message.role, ...(message.id ? { id: String(message.id) } : {}) },
  },
  el("p", { class: "message-author", text: fromUser ? "You" : "Luca" }),
  el("div", { class: "message-text" }, text),
  el("p", { class: "message-meta" }, metaParts(message)));
  if (message.status === "incomplete") item.classList.add("incomplete");
  return item;
}

/** The shown message with this id, or null. */
export function messageItem(id) {
  return dom.messageList.querySelector(`li[data-id="${CSS.escape(String(id))}"]`);
}

/** Whether the message pane is scrolled (nearly) to its end. */
export function nearBottom() {
  const scroller = dom.messages;
  return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
}

/** Scroll the message pane to its end. */
export function scrollToBottom() {
  dom.messages.scrollTop = dom.messages.scrollHeight;
}
