/**
 * The chat page's entry module: it wires each feature's events, routes #/c/<id> to the open
 * conversation and starts the session. The features live in chat/: state.js (the shared
 * elements and state), list.js (the sidebar's list and drawer), search.js, history.js (one
 * conversation and its paged history), messages.js, composer.js (streamed answers, retry),
 * header.js (title, rename, pin, delete), files.js (documents) and usage.js (the Usage view).
 * Message content is only ever inserted as text.
 */
import { setupSession } from "./app.js";
import { setupComposer } from "./chat/composer.js";
import { setupFiles } from "./chat/files.js";
import { setupHeader } from "./chat/header.js";
import { highlightMessage, openConversation, setupHistory, showEmpty } from "./chat/history.js";
import { closeDrawer, loadConversations, setupList } from "./chat/list.js";
import { clearSearch, setupSearch } from "./chat/search.js";
import { dom, state } from "./chat/state.js";
import { setupUsage, usageFor } from "./chat/usage.js";

// -- routing: #/c/<id> is the open conversation ----------------------------------------------------

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

function stopPolls() {
  for (const timer of state.titlePolls.values()) clearTimeout(timer);
  for (const timer of state.filePolls.values()) clearTimeout(timer);
  state.titlePolls.clear();
  state.filePolls.clear();
}

window.addEventListener("hashchange", route);
setupList();
setupSearch();
setupHistory();
setupComposer();
setupHeader();
setupFiles();
setupUsage();

// -- session ------------------------------------------------------------------------------------

setupSession({
  onSignedIn(user) {
    dom.adminLink.hidden = !user.is_admin;
    usageFor(user);
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
    usageFor(null);
  },
});
