/**
 * The chat page's entry module: it wires each feature's events, routes #/c/<id> to the open
 * conversation (#/settings and #/org to those screens) and starts the session. The features live
 * in chat/: state.js (the shared elements and state), list.js (the sidebar's lists and drawer),
 * search.js, history.js (one conversation and its paged history), messages.js, composer.js
 * (streamed answers, retry), header.js (title, share, rename, pin, delete), files.js (documents),
 * settings.js (sessions, password, API tokens), org.js (members, invitations) and usage.js (the
 * Usage view). Message content is only ever inserted as text.
 */
import { setupSession } from "./app.js";
import { setupComposer } from "./chat/composer.js";
import { setupFiles } from "./chat/files.js";
import { setupHeader } from "./chat/header.js";
import { highlightMessage, openConversation, setupHistory, showEmpty } from "./chat/history.js";
import { closeDrawer, loadConversations, loadShared, setupList } from "./chat/list.js";
import { managesOrganisation, setupOrg, showOrg } from "./chat/org.js";
import { clearSearch, setupSearch } from "./chat/search.js";
import { setupSettings, showSettings } from "./chat/settings.js";
import { dom, showPane, state } from "./chat/state.js";
import { setupUsage, usageFor } from "./chat/usage.js";

// -- routing: #/c/<id> is the open conversation, #/settings and #/org those screens ---------------

function routeId() {
  const match = /^#\/c\/([0-9a-fA-F-]{32,36})$/.exec(window.location.hash);
  return match ? match[1] : null;
}

function route() {
  if (dom.workspace.hidden) return;
  const screen = { "#/settings": showSettings, "#/org": showOrg }[window.location.hash];
  if (screen) {
    if (state.current) showEmpty();
    closeDrawer();
    screen();
    return;
  }
  showPane("conversation");
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
setupSettings();
setupOrg();
setupUsage();

// -- session ------------------------------------------------------------------------------------

setupSession({
  onSignedIn(user) {
    state.user = user;
    dom.adminLink.hidden = !user.is_admin;
    dom.orgLink.hidden = !managesOrganisation(user);
    usageFor(user);
    dom.workspace.hidden = false;
    dom.drawerToggle.hidden = false;
    loadConversations({ reset: true });
    loadShared();
    route();
  },
  onSignedOut() {
    dom.workspace.hidden = true;
    dom.drawerToggle.hidden = true;
    closeDrawer();
    stopPolls();
    state.conversations.clear();
    state.current = null;
    state.user = null;
    state.openGeneration += 1; // answers still on their way are for the previous user
    state.list.generation += 1;
    dom.list.replaceChildren();
    dom.sharedList.replaceChildren();
    dom.messageList.replaceChildren();
    dom.fileList.replaceChildren();
    clearSearch();
    usageFor(null);
  },
});
