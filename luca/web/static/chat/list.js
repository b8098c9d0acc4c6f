/**
 * The sidebar: the conversation list (pinned first, then newest activity; infinite scroll), the
 * "New conversation" button, the "Shared with me" list of colleagues' shared conversations, and at
 * phone width the drawer that holds them.
 */
import { el, icon, request, shortTime, showNotice } from "../app.js";
import { ICONS, NARROW, conversationHref, displayTitle, dom, isReadOnly, state } from "./state.js";

const LIST_PAGE = 20;
const SHARED_PAGE = 50;

// -- drawer (phone width) ---------------------------------------------------------------------------

function openDrawer() {
  document.body.classList.add("drawer-open");
  dom.drawerToggle.setAttribute("aria-expanded", "true");
  dom.backdrop.hidden = false;
  dom.newConversation.focus();
}

/** Close the drawer if it is open (phone width). */
export function closeDrawer() {
  if (!document.body.classList.contains("drawer-open")) return;
  document.body.classList.remove("drawer-open");
  dom.drawerToggle.setAttribute("aria-expanded", "false");
  dom.backdrop.hidden = true;
}

// -- the conversation list ----------------------------------------------------------------------

/** One conversation as a list item linking to it. */
export function renderListItem(conversation) {
  const active = state.current && state.current.id === conversation.id;
  const link = el("a", {
    class: "conversation-link",
    href: conversationHref(conversation.id),
    "aria-current": active ? "page" : null,
    onclick: () => closeDrawer(),
  },
  el("span", { class: `conversation-name${conversation.title ? "" : " untitled"}`, text: displayTitle(conversation) }),
  conversation.pinned ? el("span", { class: "pin-marker" }, icon(ICONS.pin), el("span", { class: "visually-hidden", text: "(pinned)" })) : null,
  conversation.shared && !isReadOnly(conversation) ? el("span", { class: "shared-marker", text: "shared" }) : null,
  el("time", { class: "conversation-time", datetime: conversation.updated_at, text: shortTime(conversation.updated_at) }));
  return el("li", { class: `conversation-item${conversation.pinned ? " pinned" : ""}`, dataset: { id: conversation.id } }, link);
}

/** The list item of a conversation, or null when the list does not show it. */
export function listItem(id) {
  return [...dom.list.children].find((item) => item.dataset.id === id) || null;
}

/** Put a conversation where the API would: pinned ones on top, then newest activity. */
export function placeOnTop(conversation) {
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

/** Mark the open conversation's item as the current page. */
export function markActive() {
  for (const item of [...dom.list.children, ...dom.sharedList.children]) {
    const link = item.querySelector("a");
    if (state.current && item.dataset.id === state.current.id) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

/** Say whether the list is loading or empty, and offer "more" while pages remain. */
export function updateListStatus() {
  const { done } = state.list;
  if (state.list.loading === state.list.generation) dom.listStatus.textContent = "Loading conversations…";
  else if (done && !dom.list.children.length) dom.listStatus.textContent = "No conversations yet.";
  else dom.listStatus.textContent = "";
  dom.listMore.hidden = done || state.list.loading === state.list.generation;
}

/** Load the next page of conversations, or the first one again when reset. */
export async function loadConversations({ reset = false } = {}) {
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

/** Load the conversations colleagues shared with the organisation (read-only), newest activity first. */
export async function loadShared() {
  const generation = state.list.generation;
  dom.sharedStatus.textContent = "Loading…";
  try {
    const page = await request(`/api/conversations?shared=true&limit=${SHARED_PAGE}`);
    if (generation !== state.list.generation) return;
    for (const conversation of page.items) state.conversations.set(conversation.id, conversation);
    dom.sharedList.replaceChildren(...page.items.map(renderListItem));
    dom.sharedStatus.textContent = page.items.length ? "" : "Nothing shared with you yet.";
  } catch (err) {
    if (generation === state.list.generation && err.status !== 401) dom.sharedStatus.textContent = err.message;
  }
}

/** Infinite scroll: load the next page when the end of the list comes near. */
function maybeLoadMoreConversations() {
  const scroller = dom.sidebarScroll;
  if (state.list.done || !scroller.clientHeight || !dom.searchResults.hidden) return;
  if (scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 160) loadConversations();
}

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

/** Wire the drawer, the list's scrolling and the "New conversation" buttons. */
export function setupList() {
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

  dom.sidebarScroll.addEventListener("scroll", maybeLoadMoreConversations, { passive: true });
  dom.listMore.addEventListener("click", () => loadConversations());
  window.addEventListener("resize", maybeLoadMoreConversations);
  dom.newConversation.addEventListener("click", createConversation);
  dom.emptyNew.addEventListener("click", createConversation);
}
