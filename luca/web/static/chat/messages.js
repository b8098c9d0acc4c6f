/**
 * One message as the page shows it (its content only ever a text node; an answer's meta line says
 * what it cost, or what deduplication saved), the chips of the passages
 * an answer cites (each opens its snippet and place in a panel under the answer), and the message
 * pane's scrolling, shared by the history and the composer.
 */
import { el, longTime, shortTime } from "../app.js";
import { money } from "../spend.js";
import { dom } from "./state.js";

function metaParts(message) {
  const parts = [];
  if (message.provider) parts.push(el("span", { class: "meta-provider", text: message.provider }));
  if (message.model) parts.push(el("span", { class: "meta-model", text: message.model }));
  if (message.cached) parts.push(el("span", { class: "meta-cached", text: "served from cache" }));
  if (Number(message.saved_usd) > 0) parts.push(el("span", { class: "meta-saved" }, "saved ", money(message.saved_usd)));
  else if (Number(message.cost_usd) > 0) parts.push(el("span", { class: "meta-cost" }, money(message.cost_usd)));
  if (message.status === "incomplete") parts.push(el("span", { class: "meta-incomplete", text: "incomplete" }));
  if (message.created_at) {
    parts.push(el("time", { datetime: message.created_at, title: longTime(message.created_at), text: shortTime(message.created_at) }));
  }
  return parts;
}

const text = (value) => (typeof value === "string" || typeof value === "number" ? String(value) : "");
const range = (value) => text(value).replace(/-/g, "–"); // "10-40" as "10–40"

/**
 * Where in a document a citation or a search hit points, short ("p. 37", "TB!D14", "rows 10–40")
 * or long ("Page 37", "Sheet “TB”, cell D14", "Rows 10–40"); "" when the place is unknown.
 */
export function placeLabel(place, { long = false } = {}) {
  if (!place || typeof place !== "object") return "";
  if (text(place.page)) return long ? `Page ${text(place.page)}` : `p. ${text(place.page)}`;
  if (text(place.sheet)) {
    const cells = text(place.cells);
    if (!long) return cells ? `${text(place.sheet)}!${cells}` : text(place.sheet);
    return `Sheet “${text(place.sheet)}”${cells ? `, ${cells.includes(":") ? "cells" : "cell"} ${cells}` : ""}`;
  }
  if (text(place.rows)) return `${long ? "Rows" : "rows"} ${range(place.rows)}`;
  if (text(place.lines)) return `${long ? "Lines" : "lines"} ${range(place.lines)}`;
  const paragraphs = text(place.paragraph) || range(place.paragraphs);
  const bits = [];
  if (text(place.heading)) bits.push(`“${text(place.heading)}”`);
  if (paragraphs) bits.push(`${/–/.test(paragraphs) ? "paragraphs" : "paragraph"} ${paragraphs}`);
  return long && bits.length ? bits.join(", ").replace(/^p/, "P") : bits.join(", ");
}

/** Show a citation's file, place and quoted passage (plain text) in its answer's panel; again: hide it. */
function toggleCitation(chip, citation) {
  const item = chip.closest(".message");
  const open = chip.getAttribute("aria-expanded") === "true";
  for (const other of item.querySelectorAll(".citation-chip")) other.setAttribute("aria-expanded", "false");
  item.querySelector(".citation-panel")?.remove();
  if (open) return;
  chip.setAttribute("aria-expanded", "true");
  const title = `[${text(citation.n)}] ${text(citation.filename)}`;
  const close = el("button", { type: "button", class: "button subtle small", "aria-label": "Close the passage" }, "Close");
  const panel = el("section", { class: "citation-panel", id: `citation-${item.dataset.id || "new"}`, "aria-label": title },
    el("p", { class: "citation-head" },
      el("strong", { class: "citation-title", text: title }),
      el("span", { class: "citation-place", text: placeLabel(citation, { long: true }) || "place not recorded" }),
      close),
    el("blockquote", { class: "citation-snippet", text: text(citation.snippet) }));
  const hide = () => {
    panel.remove();
    chip.setAttribute("aria-expanded", "false");
    chip.focus();
  };
  close.addEventListener("click", hide);
  panel.addEventListener("keydown", (event) => {
    if (event.key === "Escape") hide();
  });
  chip.setAttribute("aria-controls", panel.id);
  item.querySelector(".message-citations").after(panel);
}

/** The chips of an answer's citations: `[1] lease.pdf, p. 37`, each opening its passage and place. */
function renderCitations(citations) {
  const valid = Array.isArray(citations) ? citations.filter((c) => c && typeof c === "object") : [];
  if (!valid.length) return null;
  return el("ul", { class: "message-citations", "aria-label": "Sources" }, valid.map((citation) => {
    const place = placeLabel(citation);
    const label = `[${text(citation.n)}] ${text(citation.filename)}${place ? `, ${place}` : ""}`;
    const chip = el("button", {
      type: "button", class: "citation-chip", "aria-expanded": "false", title: "Show the passage cited",
      dataset: { n: text(citation.n) },
    }, label);
    chip.addEventListener("click", () => toggleCitation(chip, citation));
    return el("li", {}, chip);
  }));
}

/** One message as a list item; its content is a text node, never HTML. */
export function renderMessage(message) {
  const fromUser = message.role === "user";
  const content = document.createTextNode(message.content || "");
  const item = el("li", {
    class: `message ${fromUser ? "from-user" : "from-luca"}`,
    dataset: { role: message.role, ...(message.id ? { id: String(message.id) } : {}) },
  },
  el("p", { class: "message-author", text: fromUser ? "You" : "Luca" }),
  el("div", { class: "message-text" }, content),
  fromUser ? null : renderCitations(message.citations),
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
