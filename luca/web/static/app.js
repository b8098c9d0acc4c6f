/**
 * Shared helpers of Luca's web pages (chat.js, admin.js, account.js): the session (a cookie
 * session signed in with email and password, whose CSRF token every write sends, or a pasted API
 * token kept in localStorage) and the sign-in forms, API calls with readable errors, DOM building
 * that never parses HTML, and a reader for Server-Sent Events sent in a fetch() response body.
 */

const TOKEN_KEY = "luca.token";
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);
// The cookie session's CSRF token (GET /api/auth/session hands it out); "" with an API token.
let csrfToken = "";

/** The API token kept in localStorage, or "". */
export function getToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

/** Keep the API token for the next visit. */
export function setToken(token) {
  localStorage.setItem(TOKEN_KEY, token);
}

/** Forget the API token. */
export function clearToken() {
  localStorage.removeItem(TOKEN_KEY);
}

/** An error answered by the API ({"error": {"code", "message", "details"}}) or a network failure. */
export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

let unauthorizedHandler = null;

/** Call handler(error) whenever the API answers 401 (the token is missing, wrong or revoked). */
export function onUnauthorized(handler) {
  unauthorizedHandler = handler;
}

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const error = body && typeof body === "object" ? body.error : null;
  const message = error && typeof error.message === "string" && error.message
    ? error.message
    : `The server answered ${response.status}${response.statusText ? ` ${response.statusText}` : ""}.`;
  return new ApiError(response.status, (error && error.code) || "http_error", message, error ? error.details : null);
}

/**
 * Call the API with the stored token. `json` is sent as a JSON body, `body` as is (FormData).
 * Resolves to the parsed JSON (null for 204), or to the Response itself with `raw: true`.
 * Rejects with an ApiError; a 401 also reaches the onUnauthorized handler unless `auth: false`.
 */
export async function request(path, { method = "GET", json, body, headers = {}, raw = false, auth = true,
  signal } = {}) {
  // "no-store" keeps API reads out of the browser's cache; on a send it would also add
  // Cache-Control: no-cache to the request, which opts the answer out of deduplication.
  const safe = SAFE_METHODS.has(method.toUpperCase());
  const init = { method, headers: { Accept: "application/json", ...headers }, cache: safe ? "no-store" : "default",
    signal };
  const token = getToken();
  if (token) init.headers.Authorization = `Bearer ${token}`;
  else if (csrfToken && !safe) init.headers["X-CSRF-Token"] = csrfToken;
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, "network_error", "Luca cannot be reached. Check the connection and try again.");
  }
  if (!response.ok) {
    const error = await errorFrom(response);
    if (response.status === 401 && auth && unauthorizedHandler) unauthorizedHandler(error);
    throw error;
  }
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

/** Parse one SSE block ("event: x\ndata: {...}") and hand it to onEvent(name, data). */
function dispatchEvent(block, onEvent) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return;
  const text = data.join("\n");
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = text;
  }
  onEvent(name, parsed);
}

/** Read a text/event-stream response body as it arrives, calling onEvent(name, data) per event. */
export async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer = (buffer + decoder.decode(value, { stream: true })).replace(/\r\n/g, "\n");
    let end = buffer.indexOf("\n\n");
    while (end !== -1) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      dispatchEvent(block, onEvent);
      end = buffer.indexOf("\n\n");
    }
  }
  buffer += decoder.decode();
  if (buffer.trim()) dispatchEvent(buffer, onEvent);
}

/**
 * Create an element: el("li", {class: "a", dataset: {id: 1}, text: "...", onclick: fn}, ...children).
 * Text is always inserted as text nodes; "on*" keys become event listeners, never attributes.
 */
export function el(tag, props = {}, ...children) {
  return build(document.createElement(tag), props, children);
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** Create an SVG element the same way as el(). */
export function svg(tag, props = {}, ...children) {
  return build(document.createElementNS(SVG_NS, tag), props, children);
}

function build(node, props, children) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.setAttribute("class", value);
    else if (key === "text") node.textContent = String(value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "style") throw new Error("inline styles are not allowed (CSP)");
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** A small line icon (24x24 viewBox) from SVG path data. */
export function icon(pathData, label) {
  const node = svg("svg", { class: "icon", viewBox: "0 0 24 24", "aria-hidden": label ? null : "true",
    role: label ? "img" : null, "aria-label": label || null }, svg("path", { d: pathData }));
  if (label) node.prepend(svg("title", { text: label }));
  return node;
}

// Search snippets are HTML-escaped text whose only tags are <mark> and </mark>.
const SAFE_SNIPPET = /^(?:[^<>]|<mark>|<\/mark>)*$/;

/** Show a search snippet: as HTML only when its only tags are <mark>/</mark>, otherwise as text. */
export function setSnippet(node, snippet) {
  const text = typeof snippet === "string" ? snippet : "";
  if (SAFE_SNIPPET.test(text)) {
    node.innerHTML = text; // checked above: escaped text plus <mark> tags, nothing else
  } else {
    node.textContent = text;
  }
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const timeOnly = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayMonth = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short" });

/** A short local rendering of an ISO timestamp: the time today, otherwise the date. */
export function shortTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const now = new Date();
  return date.toDateString() === now.toDateString() ? timeOnly.format(date) : dayMonth.format(date);
}

/** A full local rendering of an ISO timestamp. */
export function longTime(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "" : dateTime.format(date);
}

let noticeTimer = null;

/** Show a message in the page's notice bar (role=alert); it goes away after a while or when dismissed. */
export function showNotice(message, { kind = "error", timeout = 10000 } = {}) {
  const notice = document.getElementById("notice");
  const text = document.getElementById("notice-text");
  if (!notice || !text) return;
  text.textContent = message;
  notice.dataset.kind = kind;
  notice.hidden = false;
  clearTimeout(noticeTimer);
  if (timeout) noticeTimer = setTimeout(hideNotice, timeout);
}

/** Hide the notice bar. */
export function hideNotice() {
  const notice = document.getElementById("notice");
  if (notice) notice.hidden = true;
}

/**
 * Run the API call a button asked for: on success say `success` (or success(result)) in an info notice and
 * resolve to the result; on failure show the error (a 401 signs out instead) and resolve to undefined.
 */
export async function perform(call, success) {
  try {
    const result = await call();
    if (success) showNotice(typeof success === "function" ? success(result) : success, { kind: "info", timeout: 5000 });
    return result;
  } catch (err) {
    if (err.status !== 401) showNotice(err.message);
    return undefined;
  }
}

/** Copy text to the clipboard; false when the browser refuses (the caller leaves it selectable). */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    return false;
  }
}

const $ = (id) => document.getElementById(id);

/** Wire a "show this form" button: it reveals its form (aria-controls) and hides itself. */
function revealer(button, onShow) {
  if (!button) return;
  button.addEventListener("click", () => {
    const form = $(button.getAttribute("aria-controls"));
    form.hidden = false;
    button.setAttribute("aria-expanded", "true");
    button.hidden = true;
    onShow(form);
  });
}

/**
 * The sign-in forms and the account area shared by the pages: email and password (a cookie
 * session), the single sign-on link, sign-up when the server allows it, and behind "Use an API
 * token" a pasted token. GET /api/auth/session says who is signed in either way. onSignedIn(user)
 * runs after a sign-in (or at load with a live session or kept token), onSignedOut() after signing
 * out or when the API answers 401.
 */
export function setupSession({ onSignedIn, onSignedOut }) {
  const signin = $("signin");
  const error = $("signin-error");
  const passwordForm = $("signin-form");
  const tokenForm = $("token-form");
  const tokenInput = $("token-input");
  const signupForm = $("signup-form");
  const account = $("account");
  const email = $("user-email");
  const signout = $("signout-button");
  let user = null;

  const showSignin = (message = "") => {
    user = null;
    csrfToken = "";
    account.hidden = true;
    signin.hidden = false;
    error.textContent = message;
    tokenInput.value = "";
    passwordForm.elements.password.value = "";
    (tokenForm.hidden ? passwordForm.elements.email : tokenInput).focus();
  };

  const signedIn = (session) => {
    user = session.user;
    csrfToken = session.csrf_token || "";
    signin.hidden = true;
    error.textContent = "";
    email.textContent = user.email;
    email.title = user.name ? `${user.name} <${user.email}>` : user.email;
    account.hidden = false;
    onSignedIn(user);
  };

  const signOut = async (message = "") => {
    const wasSignedIn = user !== null;
    if (wasSignedIn && !getToken()) {
      try {
        await request("/api/auth/logout", { method: "POST", auth: false });
      } catch {
        // the session may have ended already; the page signs out either way
      }
    }
    clearToken();
    showSignin(message);
    if (wasSignedIn) onSignedOut();
  };

  onUnauthorized(() => signOut("Your session has ended (signed out elsewhere, or the token is no longer valid). "
    + "Sign in again."));

  /** Submit handler of a sign-in form: send(form) resolves to a session, or rejects with an ApiError. */
  const submitting = (form, send, explain = (err) => err.message) => {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = form.querySelector("button[type=submit]");
      const empty = [...form.querySelectorAll("input[required]")].find((input) => !input.value.trim());
      if (empty) {
        error.textContent = `Fill in ${empty.labels[0]?.textContent || "every field"}.`;
        empty.focus();
        return;
      }
      button.disabled = true;
      error.textContent = "";
      try {
        signedIn(await send(form.elements));
      } catch (err) {
        clearToken();
        error.textContent = explain(err);
      } finally {
        button.disabled = false;
      }
    });
  };

  // A password or sign-up starts a cookie session: a token kept from before must not speak over it.
  submitting(passwordForm, (fields) => clearToken() || request("/api/auth/login", {
    method: "POST", auth: false, json: { email: fields.email.value.trim(), password: fields.password.value },
  }), (err) => (err.status === 401 ? "That email and password do not match an account." : err.message));

  submitting(tokenForm, (fields) => {
    setToken(fields.token.value.trim());
    return request("/api/auth/session", { auth: false });
  }, (err) => (err.status === 401 ? "That token is not valid: it may be mistyped, expired or revoked." : err.message));

  if (signupForm) {
    submitting(signupForm, (fields) => clearToken() || request("/api/auth/signup", {
      method: "POST", auth: false,
      json: { name: fields.name.value.trim(), email: fields.email.value.trim(), password: fields.password.value },
    }));
  }

  const forgotForm = $("forgot-form");
  forgotForm?.addEventListener("submit", async (event) => {
    event.preventDefault();
    const address = forgotForm.elements.email.value.trim();
    if (!address) return;
    try {
      await request("/api/auth/forgot", { method: "POST", auth: false, json: { email: address } });
      error.textContent = "";
      showNotice(`If ${address} has an account, a link to choose a new password is on its way (valid for an hour).`,
        { kind: "info", timeout: 10000 });
    } catch (err) {
      error.textContent = err.message;
    }
  });

  revealer($("forgot-toggle"), (form) => form.elements.email.focus());
  revealer($("token-toggle"), () => tokenInput.focus());
  revealer($("signup-toggle"), (form) => form.elements.name.focus());
  signout.addEventListener("click", () => signOut());
  $("notice-close")?.addEventListener("click", hideNotice);

  (async () => {
    const kept = getToken();
    try {
      signedIn(await request("/api/auth/session", { auth: false }));
    } catch (err) {
      if (err.status === 401) {
        clearToken();
        showSignin(kept ? "The saved token is no longer valid. Sign in again." : "");
      } else {
        showSignin(err.message);
      }
    }
  })();

  return { signOut, currentUser: () => user };
}
