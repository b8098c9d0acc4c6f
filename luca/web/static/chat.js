/**
 * The chat page: conversations (infinite scroll, pinned first, search), a conversation's history
 * (paged backwards on scroll), streamed answers (fetch + ReadableStream over SSE), retry after
 * "providers unavailable", rename / pin / delete, titles written by the background job, and
 * documents (upload, processing status). Message content is only ever inserted as text.
 */
import {
  el, icon, longTime, readEvents, request, setSnippet, setupSession, shortTime, showNotice,
} from "./app.js";

const LIST_PAGE = 20;
const HISTORY_PAGE = 30;
const TITLE_POLL_MS = 2000;
const TITLE_POLL_ATTEMPTS = 45;
const FILE_POLL_MS = 1000;
const NARROW = window.matchMedia("(max-width: 700px)");

const ICONS = {
  pin: "M9 4h6l-1 6 3 3v2H7v-2l3-3-1-6zM12 15v6",
  doc: "M7 3h7l5 5v13H7zM14 3v5h5",
  retry: "M4 12a8 8 0 1 0 2.3-5.7M4 4v5h5",
};

const $ = (id) => document.getElementById(id);
const dom = {
  workspace: $("workspace"),
  drawerToggle: $("drawer-toggle"),
  backdrop: $("drawer-backdrop"),
  sidebar: $("sidebar"),
  sidebarScroll: $("sidebar-scroll"),
  adminLink: $("admin-link"),
  newConversation: $("new-conversation"),
  emptyNew: $("empty-new"),
  searchForm: $("search-form"),
  searchInput: $("search-input"),
  searchResults: $("search-results"),
  searchList: $("search-list"),
  searchStatus: $("search-status"),
  searchClear: $("search-clear"),
  conversations: $("conversations"),
  list: $("conversation-list"),
  listStatus: $("list-status"),
  listMore: $("list-more"),
  emptyState: $("empty-state"),
  view: $("conversation-view"),
  title: $("conversation-title"),
  titleRow: $("title-row"),
  renameButton: $("rename-button"),
  renameForm: $("rename-form"),
  renameInput: $("rename-input"),
  renameCancel: $("rename-cancel"),
  pinButton: $("pin-button"),
  deleteButton: $("delete-button"),
  fileList: $("file-list"),
  fileInput: $("file-input"),
  dropOverlay: $("drop-overlay"),
  messages: $("messages"),
  messageList: $("message-list"),
  historyMore: $("history-more"),
  historyStatus: $("history-status"),
  composer: $("composer"),
  composerInput: $("composer-input"),
  sendButton: $("send-button"),
  confirm: $("confirm-dialog"),
  confirmText: $("confirm-text"),
};

const state = {
  conversations: new Map(), // id -> conversation, as last seen
  list: { cursor: null, done: false, generation: 0, loading: -1 },
  current: null, // the open conversation
  openGeneration: 0,
  history: { cursor: null, done: true, loading: false },
  streaming: false,
  highlight: null, // a message id to bring into view once the history is loaded
  titlePolls: new Map(), // conversation id -> timer
  filePolls: new Map(), // file id -> timer
  searchGeneration: 0,
  searchTimer: null,
  historyReady: Promise.resolve(), // the first page of the open conversation's history
};

// -- session ------------------------------------------------------------------------------------

setupSession({
  onSignedIn(user) {
    dom.adminLink.hidden = !user.is_admin;
    dom.workspace.hidden = false;
    dom.drawerToggle.hidden = false;
    loadConversations({ reset: true });
    route();
  },
  onSignedOut() {
    dom.workspace.hidden = true;
    dom.drawerToggle.hidden = true;
    closeDrawer();
    stopPolls();
    state.conversations.clear();
    state.current = null;
    state.openGeneration += 1; // answers still on their way are for the previous user
    state.list.generation += 1;
    dom.list.replaceChildren();
    dom.messageList.replaceChildren();
    dom.fileList.replaceChildren();
    clearSearch();
  },
});

function stopPolls() {
  for (const timer of state.titlePolls.values()) clearTimeout(timer);
  for (const timer of state.filePolls.values()) clearTimeout(timer);
  state.titlePolls.clear();
  state.filePolls.clear();
}

// -- routing: #/c/<id> is the open conversation ----------------------------------------------------

function conversationHref(id) {
  return `#/c/${encodeURIComponent(id)}`;
}

function routeId() {
  const match = /^#\/c\/([0-9a-fA-F-]{32,36})$/.exec(window.location.hash);
  return match ? match[1] : null;
}

function route() {
  if (dom.workspace.hidden) return;
  const id = routeId();
  if (id) {
    if (!state.current || state.current.id !== id) openConversation(id);
    else if (state.highlight) highlightMessage();
  } else {
    showEmpty();
  }
}

window.addEventListener("hashchange", route);

// -- drawer (phone width) ---------------------------------------------------------------------------

function openDrawer() {
  document.body.classList.add("drawer-open");
  dom.drawerToggle.setAttribute("aria-expanded", "true");
  dom.backdrop.hidden = false;
  dom.newConversation.focus();
}

function closeDrawer() {
  if (!document.body.classList.contains("drawer-open")) return;
  document.body.classList.remove("drawer-open");
  dom.drawerToggle.setAttribute("aria-expanded", "false");
  dom.backdrop.hidden = true;
}

dom.drawerToggle.addEventListener("click", () => {
  if (document.body.classList.contains("drawer-open")) {
    closeDrawer();
    dom.drawerToggle.focus();
  } else {
    openDrawer();
  }
});
dom.backdrop.addEventListener("click", closeDrawer);
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && document.body.classList.contains("drawer-open")) {
    closeDrawer();
    dom.drawerToggle.focus();
  }
});
NARROW.addEventListener("change", () => {
  if (!NARROW.matches) closeDrawer();
});

// -- the conversation list ----------------------------------------------------------------------

function displayTitle(conversation) {
  return conversation.title || "New conversation";
}

function renderListItem(conversation) {
  const active = state.current && state.current.id === conversation.id;
  const link = el("a", {
    class: "conversation-link",
    href: conversationHref(conversation.id),
    "aria-current": active ? "page" : null,
    onclick: () => closeDrawer(),
  },
  el("span", { class: `conversation-name${conversation.title ? "" : " untitled"}`, text: displayTitle(conversation) }),
  conversation.pinned ? el("span", { class: "pin-marker" }, icon(ICONS.pin), el("span", { class: "visually-hidden", text: "(pinned)" })) : null,
  el("time", { class: "conversation-time", datetime: conversation.updated_at, text: shortTime(conversation.updated_at) }));
  return el("li", { class: `conversation-item${conversation.pinned ? " pinned" : ""}`, dataset: { id: conversation.id } }, link);
}

function listItem(id) {
  return [...dom.list.children].find((item) => item.dataset.id === id) || null;
}

/** Remember a conversation as the API returned it and refresh every place that shows it. */
function applyConversation(conversation) {
  state.conversations.set(conversation.id, conversation);
  const existing = listItem(conversation.id);
  if (existing) existing.replaceWith(renderListItem(conversation));
  if (state.current && state.current.id === conversation.id) {
    state.current = conversation;
    renderHeader();
  }
}

/** Put a conversation where the API would: pinned ones on top, then newest activity. */
function placeOnTop(conversation) {
  const item = listItem(conversation.id) || renderListItem(conversation);
  if (conversation.pinned) {
    dom.list.prepend(item);
  } else {
    const firstUnpinned = [...dom.list.children].find((node) => node !== item && !node.classList.contains("pinned"));
    if (firstUnpinned) dom.list.insertBefore(item, firstUnpinned);
    else dom.list.append(item);
  }
  updateListStatus();
}

function updateListStatus() {
  const { done } = state.list;
  if (state.list.loading === state.list.generation) dom.listStatus.textContent = "Loading conversations…";
  else if (done && !dom.list.children.length) dom.listStatus.textContent = "No conversations yet.";
  else dom.listStatus.textContent = "";
  dom.listMore.hidden = done || state.list.loading === state.list.generation;
}

async function loadConversations({ reset = false } = {}) {
  const list = state.list;
  if (reset) {
    list.generation += 1;
    list.cursor = null;
    list.done = false;
  }
  const generation = list.generation;
  if (list.loading === generation || list.done) return;
  list.loading = generation;
  updateListStatus();
  try {
    const params = new URLSearchParams({ limit: String(LIST_PAGE) });
    if (list.cursor) params.set("cursor", list.cursor);
    const page = await request(`/api/conversations?${params}`);
    if (generation !== list.generation) return;
    if (reset) dom.list.replaceChildren();
    for (const conversation of page.items) {
      state.conversations.set(conversation.id, conversation);
      const stale = listItem(conversation.id);
      if (stale) stale.remove();
      dom.list.append(renderListItem(conversation));
    }
    list.cursor = page.next_cursor;
    list.done = !page.next_cursor;
  } catch (err) {
    if (generation === list.generation && err.status !== 401) {
      dom.listStatus.textContent = err.message;
      showNotice(err.message);
    }
    return;
  } finally {
    if (list.loading === generation) list.loading = -1;
    if (generation === list.generation) updateListStatus();
  }
  maybeLoadMoreConversations();
}

/** Infinite scroll: load the next page when the end of the list comes near. */
function maybeLoadMoreConversations() {
  const scroller = dom.sidebarScroll;
  if (state.list.done || !scroller.clientHeight || !dom.searchResults.hidden) return;
  if (scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 160) loadConversations();
}

dom.sidebarScroll.addEventListener("scroll", maybeLoadMoreConversations, { passive: true });
dom.listMore.addEventListener("click", () => loadConversations());
window.addEventListener("resize", maybeLoadMoreConversations);

async function createConversation() {
  try {
    const conversation = await request("/api/conversations", { method: "POST", json: {} });
    state.conversations.set(conversation.id, conversation);
    placeOnTop(conversation);
    closeDrawer();
    window.location.hash = conversationHref(conversation.id);
  } catch (err) {
    if (err.status !== 401) showNotice(err.message);
  }
}

dom.newConversation.addEventListener("click", createConversation);
dom.emptyNew.addEventListener("click", createConversation);

// -- search --------------------------------------------------------------------------------------

function roleLabel(role) {
  if (role === "user") return "You";
  if (role === "assistant") return "Luca";
  return "Title";
}

function renderHit(hit) {
  const snippet = el("span", { class: "hit-snippet" });
  setSnippet(snippet, hit.snippet);
  const link = el("a", {
    class: "hit-link",
    href: conversationHref(hit.conversation_id),
    onclick: () => {
      state.highlight = hit.message_id;
      closeDrawer();
      if (state.current && state.current.id === hit.conversation_id) highlightMessage();
    },
  },
  el("span", { class: "hit-head" },
    el("span", { class: `hit-title${hit.conversation_title ? "" : " untitled"}`, text: hit.conversation_title || "New conversation" }),
    el("span", { class: "hit-role", text: roleLabel(hit.role) })),
  snippet);
  return el("li", { class: "search-hit" }, link);
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

function clearSearch() {
  state.searchGeneration += 1;
  clearTimeout(state.searchTimer);
  dom.searchInput.value = "";
  dom.searchList.replaceChildren();
  dom.searchStatus.textContent = "";
  dom.searchResults.hidden = true;
  dom.conversations.hidden = false;
}

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

// -- one conversation ------------------------------------------------------------------------------

function showEmpty() {
  state.openGeneration += 1;
  state.current = null;
  stopFilePolls();
  dom.view.hidden = true;
  dom.emptyState.hidden = false;
  for (const link of dom.list.querySelectorAll("[aria-current]")) link.removeAttribute("aria-current");
}

function renderHeader() {
  const conversation = state.current;
  dom.title.textContent = displayTitle(conversation);
  dom.title.classList.toggle("untitled", !conversation.title);
  dom.pinButton.textContent = conversation.pinned ? "Unpin" : "Pin";
  dom.pinButton.setAttribute("aria-pressed", conversation.pinned ? "true" : "false");
  document.title = `${displayTitle(conversation)} — Luca`;
}

function markActive() {
  for (const item of dom.list.children) {
    const link = item.querySelector("a");
    if (state.current && item.dataset.id === state.current.id) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

async function openConversation(id) {
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

// -- messages ---------------------------------------------------------------------------------------

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
function renderMessage(message) {
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

function messageItem(id) {
  return dom.messageList.querySelector(`li[data-id="${CSS.escape(String(id))}"]`);
}

function nearBottom() {
  const scroller = dom.messages;
  return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
}

function scrollToBottom() {
  dom.messages.scrollTop = dom.messages.scrollHeight;
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

dom.messages.addEventListener("scroll", () => {
  if (dom.messages.scrollTop < 120) loadHistory();
}, { passive: true });
dom.historyMore.addEventListener("click", () => loadHistory());

function highlightMessage() {
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

/** Questions without an answer after them (the providers were down) get a Retry button. */
function markUnanswered() {
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

/** Ask for the conversation every few seconds until the background job has written its title. */
function pollTitle(id) {
  if (state.titlePolls.has(id)) return;
  let attempts = 0;
  const tick = async () => {
    attempts += 1;
    try {
      const conversation = await request(`/api/conversations/${encodeURIComponent(id)}`);
      if (conversation.title) {
        state.titlePolls.delete(id);
        applyConversation(conversation);
        return;
      }
    } catch (err) {
      if (err.status === 404 || err.status === 401) {
        state.titlePolls.delete(id);
        return;
      }
    }
    if (attempts >= TITLE_POLL_ATTEMPTS || !state.titlePolls.has(id)) {
      state.titlePolls.delete(id);
      return;
    }
    state.titlePolls.set(id, setTimeout(tick, TITLE_POLL_MS));
  };
  state.titlePolls.set(id, setTimeout(tick, TITLE_POLL_MS));
}

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

// -- rename, pin, delete -----------------------------------------------------------------------------

function showRename() {
  if (!state.current) return;
  dom.renameInput.value = state.current.title || "";
  dom.titleRow.hidden = true;
  dom.renameForm.hidden = false;
  dom.renameInput.focus();
  dom.renameInput.select();
}

function hideRename() {
  dom.renameForm.hidden = true;
  dom.titleRow.hidden = false;
}

async function updateCurrent(changes) {
  const conversation = state.current;
  const updated = await request(`/api/conversations/${encodeURIComponent(conversation.id)}`, {
    method: "PATCH", json: changes,
  });
  applyConversation(updated);
  return updated;
}

dom.renameButton.addEventListener("click", showRename);
dom.renameCancel.addEventListener("click", () => {
  hideRename();
  dom.renameButton.focus();
});
dom.renameInput.addEventListener("keydown", (event) => {
  if (event.key === "Escape") {
    event.stopPropagation();
    hideRename();
    dom.renameButton.focus();
  }
});
dom.renameForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const title = dom.renameInput.value.trim();
  if (!title) {
    showNotice("A title cannot be empty.");
    dom.renameInput.focus();
    return;
  }
  try {
    await updateCurrent({ title });
    hideRename();
    dom.renameButton.focus();
  } catch (err) {
    if (err.status !== 401) showNotice(err.message);
  }
});

dom.pinButton.addEventListener("click", async () => {
  if (!state.current) return;
  try {
    const updated = await updateCurrent({ pinned: !state.current.pinned });
    if (updated.pinned) placeOnTop(updated);
    else loadConversations({ reset: true }); // its place among the unpinned ones is the server's to say
  } catch (err) {
    if (err.status !== 401) showNotice(err.message);
  }
});

function confirmDelete(title) {
  return new Promise((resolve) => {
    dom.confirmText.textContent = `“${title}” and all its messages and documents will be deleted. This cannot be undone.`;
    dom.confirm.returnValue = "";
    dom.confirm.addEventListener("close", () => resolve(dom.confirm.returnValue === "ok"), { once: true });
    dom.confirm.showModal();
    document.getElementById("confirm-cancel").focus();
  });
}

dom.deleteButton.addEventListener("click", async () => {
  const conversation = state.current;
  if (!conversation || !(await confirmDelete(displayTitle(conversation)))) {
    dom.deleteButton.focus();
    return;
  }
  try {
    await request(`/api/conversations/${encodeURIComponent(conversation.id)}`, { method: "DELETE" });
    state.conversations.delete(conversation.id);
    listItem(conversation.id)?.remove();
    clearTimeout(state.titlePolls.get(conversation.id));
    state.titlePolls.delete(conversation.id);
    updateListStatus();
    window.location.hash = "";
    showNotice(`Deleted “${displayTitle(conversation)}”.`, { kind: "info", timeout: 4000 });
  } catch (err) {
    if (err.status !== 401) showNotice(err.message);
  }
});

// -- documents ----------------------------------------------------------------------------------------

const STATUS_LABELS = { pending: "waiting", processing: "processing", ready: "ready", failed: "failed", uploading: "uploading" };

function fileDetails(file) {
  if (file.status !== "ready") return "";
  const bits = [];
  if (file.pages) bits.push(`${file.pages} page${file.pages === 1 ? "" : "s"}`);
  if (file.text_chars !== null && file.text_chars !== undefined) bits.push(`${file.text_chars.toLocaleString()} characters`);
  return bits.join(" · ");
}

function renderFile(file) {
  const status = file.status;
  const busy = status === "pending" || status === "processing" || status === "uploading";
  const item = el("li", { class: `file status-${status}`, dataset: { id: file.id ? String(file.id) : "" } },
    icon(ICONS.doc),
    el("span", { class: "file-name", text: file.filename, title: file.filename }),
    el("span", { class: "file-status", text: STATUS_LABELS[status] || status }),
    busy ? el("progress", {
      class: "file-progress", max: "100", "aria-label": `Processing ${file.filename}`,
      ...(status === "uploading" ? {} : { value: String(file.progress || 0) }),
    }) : null,
    fileDetails(file) ? el("span", { class: "file-details", text: fileDetails(file) }) : null,
    status === "failed" && file.error ? el("span", { class: "file-error", text: file.error }) : null);
  return item;
}

function fileItem(id) {
  return [...dom.fileList.children].find((item) => item.dataset.id === String(id)) || null;
}

/** Show a document's latest state in place of its old item (or its upload placeholder), else at the end. */
function showFile(file, placeholder = null) {
  const rendered = renderFile(file);
  const existing = (file.id && fileItem(file.id)) || (placeholder && placeholder.isConnected ? placeholder : null);
  if (existing) existing.replaceWith(rendered);
  else dom.fileList.append(rendered);
}

function stopFilePolls() {
  for (const timer of state.filePolls.values()) clearTimeout(timer);
  state.filePolls.clear();
}

async function loadFiles() {
  const conversation = state.current;
  const generation = state.openGeneration;
  try {
    const files = await request(`/api/conversations/${encodeURIComponent(conversation.id)}/files`);
    if (generation !== state.openGeneration) return;
    // Uploads that started while the list was on its way stay where they are.
    const listed = new Set(files.items.map((file) => String(file.id)));
    const newer = [...dom.fileList.children].filter((item) => !listed.has(item.dataset.id));
    dom.fileList.replaceChildren(...files.items.map(renderFile), ...newer);
    for (const file of files.items) {
      if (file.status === "pending" || file.status === "processing") pollFile(file.id);
    }
  } catch (err) {
    if (generation === state.openGeneration && err.status !== 401) showNotice(err.message);
  }
}

/** Follow a document's processing until it is ready or failed. */
function pollFile(id) {
  if (state.filePolls.has(id)) return;
  const generation = state.openGeneration;
  const tick = async () => {
    if (generation !== state.openGeneration) return;
    try {
      const file = await request(`/api/files/${encodeURIComponent(id)}`);
      if (generation !== state.openGeneration) return;
      showFile(file);
      if (file.status === "ready" || file.status === "failed") {
        state.filePolls.delete(id);
        if (file.status === "failed") showNotice(`${file.filename} could not be read: ${file.error || "unknown reason"}`);
        return;
      }
    } catch (err) {
      if (err.status === 404 || err.status === 401) {
        state.filePolls.delete(id);
        return;
      }
    }
    state.filePolls.set(id, setTimeout(tick, FILE_POLL_MS));
  };
  state.filePolls.set(id, setTimeout(tick, FILE_POLL_MS / 2));
}

async function upload(file) {
  const conversation = state.current;
  if (!conversation) return;
  const generation = state.openGeneration;
  const placeholder = renderFile({ filename: file.name, status: "uploading" });
  dom.fileList.append(placeholder);
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const stored = await request(`/api/conversations/${encodeURIComponent(conversation.id)}/files`, {
      method: "POST", body: form,
    });
    if (generation !== state.openGeneration) return;
    showFile(stored, placeholder);
    if (stored.status === "ready" || stored.status === "failed") return;
    pollFile(stored.id);
  } catch (err) {
    if (generation !== state.openGeneration) return;
    showFile({ filename: file.name, status: "failed", error: err.message }, placeholder);
    if (err.status !== 401) showNotice(`${file.name}: ${err.message}`);
  }
}

dom.fileInput.addEventListener("change", () => {
  for (const file of dom.fileInput.files) upload(file);
  dom.fileInput.value = "";
});

const hasFiles = (event) => event.dataTransfer && [...event.dataTransfer.types].includes("Files");
let dragDepth = 0;
dom.view.addEventListener("dragenter", (event) => {
  if (!hasFiles(event)) return;
  event.preventDefault();
  dragDepth += 1;
  dom.dropOverlay.hidden = false;
});
dom.view.addEventListener("dragover", (event) => {
  if (!hasFiles(event)) return;
  event.preventDefault();
  event.dataTransfer.dropEffect = "copy";
});
dom.view.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (!dragDepth) dom.dropOverlay.hidden = true;
});
dom.view.addEventListener("drop", (event) => {
  if (!hasFiles(event)) return;
  event.preventDefault();
  dragDepth = 0;
  dom.dropOverlay.hidden = true;
  for (const file of event.dataTransfer.files) upload(file);
});
// A file dropped anywhere else must not make the browser leave the page to show it.
window.addEventListener("dragover", (event) => { if (hasFiles(event)) event.preventDefault(); });
window.addEventListener("drop", (event) => { if (hasFiles(event)) event.preventDefault(); });
