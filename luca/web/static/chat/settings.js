/**
 * The settings screen (#/settings): where the user is signed in (ending any other session), the
 * password, and personal API tokens (made with a name, scopes and an expiry, the secret shown
 * once; listed with their last use; revoked).
 */
import { ApiError, copyText, el, longTime, request, showNotice } from "../app.js";
import { confirmAction, showPane } from "./state.js";

const $ = (id) => document.getElementById(id);
const view = {
  sessionRows: $("session-rows"),
  sessionStatus: $("session-status"),
  passwordForm: $("password-form"),
  passwordError: $("password-error"),
  tokenForm: $("token-create-form"),
  tokenRows: $("token-rows"),
  tokenStatus: $("token-status"),
  secret: $("token-secret"),
  secretValue: $("token-secret-value"),
  secretCopy: $("token-secret-copy"),
};

const when = (iso) => (iso ? longTime(iso) : "never");

function sessionRow(session) {
  const action = session.current
    ? el("span", { class: "badge", text: "this browser" })
    : el("button", { type: "button", class: "button subtle small danger", text: "End",
      "aria-label": `End the session of ${session.user_agent || "an unknown browser"}`,
      onclick: () => endSession(session.id) });
  return el("tr", { dataset: { session: String(session.id) } },
    el("td", {}, el("span", { class: "user-agent", text: session.user_agent || "unknown browser",
      title: session.user_agent || null })),
    el("td", { text: session.address || "" }),
    el("td", { text: when(session.created_at) }),
    el("td", { text: when(session.last_used_at) }),
    el("td", { class: "action" }, action));
}

async function loadSessions() {
  view.sessionStatus.textContent = "Loading…";
  try {
    const sessions = await request("/api/auth/sessions");
    view.sessionRows.replaceChildren(...sessions.items.map(sessionRow));
    view.sessionStatus.textContent = sessions.items.length ? ""
      : "No browser sessions: you are signed in with an API token.";
  } catch (err) {
    if (err.status !== 401) view.sessionStatus.textContent = err.message;
  }
}

async function endSession(id) {
  try {
    await request(`/api/auth/sessions/${encodeURIComponent(id)}`, { method: "DELETE" });
    showNotice("That session has ended.", { kind: "info", timeout: 4000 });
  } catch (err) {
    if (err.status !== 401) showNotice(err.message);
  }
  loadSessions();
}

function tokenRow(token) {
  return el("tr", { dataset: { token: String(token.id) } },
    el("td", { text: token.name || "—" }),
    el("td", {}, el("code", { text: `${token.prefix}…` })),
    el("td", { text: token.scopes.join(", ") }),
    el("td", { text: when(token.created_at) }),
    el("td", { text: token.expires_at ? longTime(token.expires_at) : "never" }),
    el("td", { text: when(token.last_used_at) }),
    el("td", { class: "action" }, el("button", {
      type: "button", class: "button subtle small danger", text: "Revoke",
      "aria-label": `Revoke the token ${token.name || token.prefix}`, onclick: () => revokeToken(token),
    })));
}

async function loadTokens() {
  view.tokenStatus.textContent = "Loading…";
  try {
    const tokens = await request("/api/tokens");
    view.tokenRows.replaceChildren(...tokens.items.map(tokenRow));
    view.tokenStatus.textContent = tokens.items.length ? "" : "No personal tokens yet.";
  } catch (err) {
    if (err.status !== 401) view.tokenStatus.textContent = err.message;
  }
}

async function revokeToken(token) {
  if (!(await confirmAction(`Revoke ${token.name || "this token"}?`, `Whatever uses the token ${token.prefix}… `
    + "is refused from now on. This cannot be undone.", "Revoke"))) return;
  try {
    await request(`/api/tokens/${encodeURIComponent(token.id)}`, { method: "DELETE" });
    showNotice(`Revoked ${token.name || "the token"}.`, { kind: "info", timeout: 4000 });
  } catch (err) {
    if (err.status !== 401) showNotice(err.message);
  }
  loadTokens();
}

async function createToken(event) {
  event.preventDefault();
  const fields = view.tokenForm.elements;
  const scopes = [...view.tokenForm.querySelectorAll("input[name=scope]:checked")].map((box) => box.value);
  if (!scopes.length) {
    showNotice("Pick at least one scope.");
    return;
  }
  const body = { name: fields.name.value.trim(), scopes };
  if (fields.expiry.value) body.expires_in_days = Number(fields.expiry.value);
  try {
    const created = await request("/api/tokens", { method: "POST", json: body });
    view.secretValue.value = created.token;
    view.secret.hidden = false;
    view.secretValue.focus();
    view.secretValue.select();
    fields.name.value = "";
  } catch (err) {
    if (err.status !== 401) showNotice(err.message);
  }
  loadTokens();
}

async function changePassword(event) {
  event.preventDefault();
  const fields = view.passwordForm.elements;
  view.passwordError.textContent = "";
  try {
    await request("/api/auth/password", { method: "POST", json: { current: fields.current.value, new: fields.new.value } });
    fields.current.value = "";
    fields.new.value = "";
    showNotice("Your password is changed; every other session has ended.", { kind: "info", timeout: 6000 });
    loadSessions();
  } catch (err) {
    if (err instanceof ApiError && err.status !== 401) view.passwordError.textContent = err.message;
  }
}

/** Show the settings screen and load its lists. */
export function showSettings() {
  showPane("settings");
  view.secret.hidden = true;
  view.secretValue.value = "";
  document.title = "Settings — Luca";
  loadSessions();
  loadTokens();
}

/** Wire the password form and the token form. */
export function setupSettings() {
  view.passwordForm.addEventListener("submit", changePassword);
  view.tokenForm.addEventListener("submit", createToken);
  view.secretCopy.addEventListener("click", async () => {
    view.secretValue.select();
    showNotice(await copyText(view.secretValue.value) ? "Token copied." : "Select the token and copy it.",
      { kind: "info", timeout: 3000 });
  });
}
