/**
 * Search: the sidebar's search box (as the user types, after a pause, or on Enter) and its hits,
 * each linking to the conversation with the matching message brought into view; a document's hit
 * names the file and the place (page, sheet and cells, rows) and opens the conversation it is in.
 */
import { el, request, setSnippet } from "../app.js";
import { highlightMessage } from "./history.js";
import { closeDrawer } from "./list.js";
import { placeLabel } from "./messages.js";
import { conversationHref, dom, state } from "./state.js";

function roleLabel(role) {
  if (role === "user") return "You";
  if (role === "assistant") return "Luca";
  return "Title";
}

function renderHit(hit) {
  const snippet = el("span", { class: "hit-snippet" });
  setSnippet(snippet, hit.snippet); // escaped text with <mark> only, else shown as text
  const isDocument = hit.kind === "document";
  const place = isDocument ? placeLabel(hit) : "";
  const link = el("a", {
    class: "hit-link",
    href: conversationHref(hit.conversation_id),
    onclick: () => {
      state.highlight = isDocument ? null : hit.message_id;
      closeDrawer();
      if (state.current && state.current.id === hit.conversation_id) highlightMessage();
    },
  },
  el("span", { class: "hit-head" },
    el("span", { class: `hit-title${hit.conversation_title ? "" : " untitled"}`, text: hit.conversation_title || "New conversation" }),
    el("span", { class: "hit-role", text: isDocument ? "Document" : roleLabel(hit.role) })),
  isDocument ? el("span", { class: "hit-file", text: `${hit.filename || "document"}${place ? `, ${place}` : ""}` }) : null,
  snippet);
  return el("li", { class: `search-hit${isDocument ? " document-hit" : ""}`, dataset: { kind: hit.kind || "" } }, link);
}

async function runSearch(query) {
  const q = query.trim();
  if (!q) {
    clearSearch();
    return;
  }
  const generation = ++state.searchGeneration;
  dom.searchResults.hidden = false;
  dom.conversations.hidden = true;
  dom.searchStatus.textContent = "Searching…";
  try {
    const results = await request(`/api/search?${new URLSearchParams({ q: q.slice(0, 200), limit: "20" })}`);
    if (generation !== state.searchGeneration) return;
    dom.searchList.replaceChildren(...results.items.map(renderHit));
    const count = results.items.length;
    dom.searchStatus.textContent = count
      ? `${count} result${count === 1 ? "" : "s"} for “${q}”`
      : `Nothing matches “${q}”.`;
  } catch (err) {
    if (generation === state.searchGeneration) dom.searchStatus.textContent = err.message;
  }
}

/** Empty the search box and show the conversation list again. */
export function clearSearch() {
  state.searchGeneration += 1;
  clearTimeout(state.searchTimer);
  dom.searchInput.value = "";
  dom.searchList.replaceChildren();
  dom.searchStatus.textContent = "";
  dom.searchResults.hidden = true;
  dom.conversations.hidden = false;
}

/** Wire the search box: Enter, typing (after a pause), Escape and the clear button. */
export function setupSearch() {
  dom.searchForm.addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(state.searchTimer);
    runSearch(dom.searchInput.value);
  });
  dom.searchInput.addEventListener("input", () => {
    clearTimeout(state.searchTimer);
    const value = dom.searchInput.value;
    if (!value.trim()) {
      clearSearch();
      return;
    }
    state.searchTimer = setTimeout(() => runSearch(value), 350);
  });
  dom.searchInput.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && dom.searchInput.value) {
      event.stopPropagation();
      clearSearch();
    }
  });
  dom.searchClear.addEventListener("click", () => {
    clearSearch();
    dom.searchInput.focus();
  });
}
