/**
 * Shared helpers of Luca's web pages (chat.js, admin.js): the stored API token and the
 * sign-in form, API calls with readable errors, DOM building that never parses HTML,
 * and a reader for Server-Sent Events sent in a fetch() response body.
 */

const TOKEN_KEY = "luca.token";

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
  const init = { method, headers: { Accept: "application/json", ...headers }, cache: "no-store", signal };
  const token = getToken();
  if (token) init.headers.Authorization = `Bearer ${token}`;
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
 * The sign-in form and the account area shared by both pages. The token is checked with
 * GET /api/me before it is kept; onSignedIn(user) runs after a sign-in (or at load with a kept
 * token), onSignedOut() after signing out or when the API answers 401.
 */
export function setupSession({ onSignedIn, onSignedOut }) {
  const signin = document.getElementById("signin");
  const form = document.getElementById("signin-form");
  const input = document.getElementById("token-input");
  const error = document.getElementById("signin-error");
  const button = document.getElementById("signin-button");
  const account = document.getElementById("account");
  const email = document.getElementById("user-email");
  const signout = document.getElementById("signout-button");
  let user = null;

  const showSignin = (message = "") => {
    user = null;
    account.hidden = true;
    signin.hidden = false;
    error.textContent = message;
    input.value = "";
    input.focus();
  };

  const signedIn = (me) => {
    user = me;
    signin.hidden = true;
    error.textContent = "";
    email.textContent = me.email;
    email.title = me.name ? `${me.name} <${me.email}>` : me.email;
    account.hidden = false;
    onSignedIn(me);
  };

  const signOut = (message = "") => {
    const wasSignedIn = user !== null;
    clearToken();
    showSignin(message);
    if (wasSignedIn) onSignedOut();
  };

  onUnauthorized(() => signOut("Your session has ended (the token is no longer valid). Sign in again."));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) {
      error.textContent = "Paste your API token.";
      input.focus();
      return;
    }
    button.disabled = true;
    error.textContent = "";
    setToken(token);
    try {
      signedIn(await request("/api/me", { auth: false }));
    } catch (err) {
      clearToken();
      error.textContent = err.status === 401 ? "That token is not valid: it may be mistyped or revoked." : err.message;
      input.select();
    } finally {
      button.disabled = false;
    }
  });

  signout.addEventListener("click", () => signOut());
  document.getElementById("notice-close")?.addEventListener("click", hideNotice);

  (async () => {
    if (!getToken()) {
      showSignin();
      return;
    }
    try {
      signedIn(await request("/api/me", { auth: false }));
    } catch (err) {
      if (err.status === 401) {
        clearToken();
        showSignin("The saved token is no longer valid. Sign in again.");
      } else {
        showSignin(err.message);
      }
    }
  })();

  return { signOut, currentUser: () => user };
}
