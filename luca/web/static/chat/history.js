/**
 * One conversation: opening it (header, first page of history, documents), its history paged
 * backwards as the user scrolls up, and bringing a search hit's message into view.
 */
import { request, showNotice } from "../app.js";
import { markUnanswered } from "./composer.js";
import { loadFiles, stopFilePolls } from "./files.js";
import { hideRename, pollTitle, renderHeader } from "./header.js";
import { listItem, markActive } from "./list.js";
import { messageItem, renderMessage, scrollToBottom } from "./messages.js";
import { NARROW, dom, state } from "./state.js";

const HISTORY_PAGE = 30;

/** Close the open conversation and show the empty state. */
export function showEmpty() {
  state.openGeneration += 1;
  state.current = null;
  stopFilePolls();
  dom.view.hidden = true;
  dom.emptyState.hidden = false;
  for (const link of dom.list.querySelectorAll("[aria-current]")) link.removeAttribute("aria-current");
}

/** Open a conversation: its header, the first page of its history and its documents. */
export async function openConversation(id) {
  const generation = ++state.openGeneration;
  let historyLoaded = null;
  state.historyReady = new Promise((resolve) => { historyLoaded = resolve; });
  stopFilePolls();
  hideRename();
  dom.emptyState.hidden = true;
  dom.view.hidden = false;
  dom.messageList.replaceChildren();
  dom.fileList.replaceChildren();
  dom.historyMore.hidden = true;
  dom.historyStatus.textContent = "Loading…";
  const known = state.conversations.get(id);
  state.current = known || null;
  if (known) renderHeader();
  else dom.title.textContent = "";
  try {
    const conversation = await request(`/api/conversations/${encodeURIComponent(id)}`);
    if (generation !== state.openGeneration) return;
    state.current = conversation;
    state.conversations.set(conversation.id, conversation);
    renderHeader();
    markActive();
    state.history = { cursor: null, done: false, loading: false };
    await Promise.all([loadHistory(true).finally(historyLoaded), loadFiles()]);
    if (generation !== state.openGeneration) return;
    if (!conversation.title && dom.messageList.querySelector(".from-luca")) pollTitle(conversation.id);
    // Not while the user has started typing somewhere else (search) as the conversation loaded.
    const typingElsewhere = document.activeElement?.matches("input, textarea, select");
    if (!NARROW.matches && !typingElsewhere) dom.composerInput.focus({ preventScroll: true });
  } catch (err) {
    if (generation !== state.openGeneration || err.status === 401) return;
    showNotice(err.status === 404 ? "That conversation does not exist any more." : err.message);
    if (err.status === 404) {
      listItem(id)?.remove();
      window.location.hash = "";
    }
  } finally {
    historyLoaded();
  }
}

async function loadHistory(initial = false) {
  const history = state.history;
  const conversation = state.current;
  if (!conversation || history.loading || history.done) return;
  const generation = state.openGeneration;
  history.loading = true;
  dom.historyStatus.textContent = initial ? "Loading…" : "Loading earlier messages…";
  try {
    const params = new URLSearchParams({ limit: String(HISTORY_PAGE) });
    if (history.cursor) params.set("cursor", history.cursor);
    const page = await request(`/api/conversations/${encodeURIComponent(conversation.id)}/messages?${params}`);
    if (generation !== state.openGeneration) return;
    const scroller = dom.messages;
    const fromBottom = scroller.scrollHeight - scroller.scrollTop;
    const older = document.createDocumentFragment();
    for (const message of [...page.items].reverse()) {
      if (!messageItem(message.id)) older.append(renderMessage(message));
    }
    dom.messageList.prepend(older);
    history.cursor = page.next_cursor;
    history.done = !page.next_cursor;
    if (initial) scrollToBottom();
    else scroller.scrollTop = scroller.scrollHeight - fromBottom;
    markUnanswered();
    dom.historyStatus.textContent = history.done && !dom.messageList.children.length
      ? "No messages yet. Ask Luca anything about tax, accounts or bookkeeping."
      : "";
    dom.historyMore.hidden = history.done;
  } catch (err) {
    if (generation === state.openGeneration && err.status !== 401) dom.historyStatus.textContent = err.message;
  } finally {
    if (generation === state.openGeneration) history.loading = false;
  }
  if (generation !== state.openGeneration) return;
  if (!history.done && dom.messages.scrollHeight <= dom.messages.clientHeight + 40) loadHistory();
  else if (state.highlight) highlightMessage();
}

/** Bring state.highlight's message into view, loading earlier pages until it is there. */
export function highlightMessage() {
  const id = state.highlight;
  if (!id) return;
  const item = messageItem(id);
  if (!item) {
    if (state.history.done) state.highlight = null;
    else if (!state.history.loading) loadHistory();
    return;
  }
  state.highlight = null;
  item.scrollIntoView({ block: "center" });
  item.classList.add("highlight");
  setTimeout(() => item.classList.remove("highlight"), 2500);
}

/** Wire the history's paging: scrolling near the top, or the "Load earlier messages" button. */
export function setupHistory() {
  dom.messages.addEventListener("scroll", () => {
    if (dom.messages.scrollTop < 120) loadHistory();
  }, { passive: true });
  dom.historyMore.addEventListener("click", () => loadHistory());
}
