/**
 * What the chat page's modules share: the page's elements (looked up once), the small state they
 * read and write, and the few helpers every feature needs. Nothing here talks to the API.
 */

export const NARROW = window.matchMedia("(max-width: 700px)");

export const ICONS = {
  pin: "M9 4h6l-1 6 3 3v2H7v-2l3-3-1-6zM12 15v6",
  doc: "M7 3h7l5 5v13H7zM14 3v5h5",
  retry: "M4 12a8 8 0 1 0 2.3-5.7M4 4v5h5",
};

const $ = (id) => document.getElementById(id);
export const dom = {
  workspace: $("workspace"),
  drawerToggle: $("drawer-toggle"),
  backdrop: $("drawer-backdrop"),
  sidebar: $("sidebar"),
  sidebarScroll: $("sidebar-scroll"),
  adminLink: $("admin-link"),
  settingsLink: $("settings-link"),
  orgLink: $("org-link"),
  conversation: $("conversation"),
  settingsView: $("settings-view"),
  orgView: $("org-view"),
  sharedList: $("shared-list"),
  sharedStatus: $("shared-status"),
  shareButton: $("share-button"),
  readOnlyBadge: $("read-only-badge"),
  attach: $("attach"),
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
  confirmTitle: $("confirm-title"),
  confirmText: $("confirm-text"),
  confirmOk: $("confirm-ok"),
};

export const state = {
  user: null, // the signed-in user (GET /api/auth/session)
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

/** The page's link to a conversation: #/c/<id> is the open conversation. */
export function conversationHref(id) {
  return `#/c/${encodeURIComponent(id)}`;
}

/** A conversation's title as the page shows it. */
export function displayTitle(conversation) {
  return conversation.title || "New conversation";
}

/** Whether the conversation is a colleague's, shared with the user to read (no writing, renaming or deleting). */
export function isReadOnly(conversation) {
  return Boolean(conversation && state.user && conversation.user_id !== state.user.id);
}

/** Show one of the workspace's panes (conversation, settings, org) beside the sidebar, the others hidden. */
export function showPane(name) {
  dom.conversation.hidden = name !== "conversation";
  dom.settingsView.hidden = name !== "settings";
  dom.orgView.hidden = name !== "org";
  for (const [link, pane] of [[dom.settingsLink, "settings"], [dom.orgLink, "org"]]) {
    if (name === pane) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

/** Ask before something that cannot be undone, in the page's dialog; resolves to whether the user agreed. */
export function confirmAction(title, text, action) {
  return new Promise((resolve) => {
    dom.confirmTitle.textContent = title;
    dom.confirmText.textContent = text;
    dom.confirmOk.textContent = action;
    dom.confirm.returnValue = "";
    dom.confirm.addEventListener("close", () => resolve(dom.confirm.returnValue === "ok"), { once: true });
    dom.confirm.showModal();
    document.getElementById("confirm-cancel").focus();
  });
}
