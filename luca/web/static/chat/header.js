/**
 * The open conversation's header: its title (renamed by the user, or awaited while the background
 * job writes it), share with the organisation / stop sharing, pin / unpin and delete; a colleague's
 * shared conversation shows none of them, only that it is read-only (the composer goes too).
 */
import { perform, request, showNotice } from "../app.js";
import { listItem, loadConversations, placeOnTop, renderListItem, updateListStatus } from "./list.js";
import { confirmAction, displayTitle, dom, isReadOnly, state } from "./state.js";

const TITLE_POLL_MS = 2000;
const TITLE_POLL_ATTEMPTS = 45;

/** Show the open conversation's title and pin state in the header and the page title. */
export function renderHeader() {
  const conversation = state.current;
  dom.title.textContent = displayTitle(conversation);
  dom.title.classList.toggle("untitled", !conversation.title);
  dom.pinButton.textContent = conversation.pinned ? "Unpin" : "Pin";
  dom.pinButton.setAttribute("aria-pressed", conversation.pinned ? "true" : "false");
  dom.shareButton.textContent = conversation.shared ? "Shared" : "Share";
  dom.shareButton.setAttribute("aria-pressed", conversation.shared ? "true" : "false");
  const readOnly = isReadOnly(conversation);
  dom.readOnlyBadge.hidden = !readOnly;
  for (const node of [dom.shareButton, dom.renameButton, dom.pinButton, dom.deleteButton, dom.composer, dom.attach]) {
    node.hidden = readOnly;
  }
  document.title = `${displayTitle(conversation)} — Luca`;
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

/** Ask for the conversation every few seconds until the background job has written its title. */
export function pollTitle(id) {
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

// -- rename, pin, delete -----------------------------------------------------------------------------

function showRename() {
  if (!state.current) return;
  dom.renameInput.value = state.current.title || "";
  dom.titleRow.hidden = true;
  dom.renameForm.hidden = false;
  dom.renameInput.focus();
  dom.renameInput.select();
}

/** Put the title back in place of the rename form. */
export function hideRename() {
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

/** Wire the rename form and the share, pin and delete buttons. */
export function setupHeader() {
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

  dom.shareButton.addEventListener("click", async () => {
    if (!state.current) return;
    await perform(() => updateCurrent({ shared: !state.current.shared }), (updated) => (updated.shared
      ? "Everyone in your organisation can now read this conversation." : "This conversation is yours alone again."));
  });

  dom.deleteButton.addEventListener("click", async () => {
    const conversation = state.current;
    const title = conversation ? displayTitle(conversation) : "";
    if (!conversation || !(await confirmAction("Delete this conversation?",
      `“${title}” and all its messages and documents will be deleted. This cannot be undone.`, "Delete"))) {
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
}
