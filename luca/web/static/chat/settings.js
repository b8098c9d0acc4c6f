/**
 * The settings screen (#/settings): where the user is signed in (ending any other session), the
 * password, and personal API tokens (made with a name, scopes and an expiry, the secret shown
 * once; listed with their last use; revoked).
 */
import { copyText, el, longTime, perform, request, showNotice } from "../app.js";
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

/** Fill a table's rows from a list endpoint, saying in status when it is loading, empty or failed. */
async function loadRows(path, rows, status, render, empty) {
  status.textContent = "Loading…";
  try {
    const list = await request(path);
    rows.replaceChildren(...list.items.map(render));
    status.textContent = list.items.length ? "" : empty;
  } catch (err) {
    if (err.status !== 401) status.textContent = err.message;
  }
}

const loadSessions = () => loadRows("/api/auth/sessions", view.sessionRows, view.sessionStatus, sessionRow,
  "No browser sessions: you are signed in with an API token.");
const loadTokens = () => loadRows("/api/tokens", view.tokenRows, view.tokenStatus, tokenRow, "No personal tokens yet.");

async function endSession(id) {
  await perform(() => request(`/api/auth/sessions/${encodeURIComponent(id)}`, { method: "DELETE" }),
    "That session has ended.");
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

async function revokeToken(token) {
  if (!(await confirmAction(`Revoke ${token.name || "this token"}?`, `Whatever uses the token ${token.prefix}… `
    + "is refused from now on. This cannot be undone.", "Revoke"))) return;
  await perform(() => request(`/api/tokens/${encodeURIComponent(token.id)}`, { method: "DELETE" }),
    `Revoked ${token.name || "the token"}.`);
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
  const created = await perform(() => request("/api/tokens", { method: "POST", json: body }));
  if (created) {
    view.secretValue.value = created.token;
    view.secret.hidden = false;
    view.secretValue.focus();
    view.secretValue.select();
    fields.name.value = "";
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
    if (err.status !== 401) view.passwordError.textContent = err.message;
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
