/**
 * The open conversation's documents: the list with each one's processing status, uploads from
 * the file picker or dropped on the conversation, and polling until processing ends.
 */
import { el, icon, request, showNotice } from "../app.js";
import { ICONS, dom, isReadOnly, state } from "./state.js";

const FILE_POLL_MS = 1000;

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

/** Stop following the documents' processing (another conversation is opened, or none). */
export function stopFilePolls() {
  for (const timer of state.filePolls.values()) clearTimeout(timer);
  state.filePolls.clear();
}

/** List the open conversation's documents and follow those still being processed. */
export async function loadFiles() {
  const conversation = state.current;
  const generation = state.openGeneration;
  if (isReadOnly(conversation)) return; // a colleague's documents stay theirs: sharing shows the messages
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
  if (!conversation || isReadOnly(conversation)) return;
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

const hasFiles = (event) => event.dataTransfer && [...event.dataTransfer.types].includes("Files");

/** Wire the file picker and dropping files on the conversation. */
export function setupFiles() {
  dom.fileInput.addEventListener("change", () => {
    for (const file of dom.fileInput.files) upload(file);
    dom.fileInput.value = "";
  });

  let dragDepth = 0;
  dom.view.addEventListener("dragenter", (event) => {
    if (!hasFiles(event) || isReadOnly(state.current)) return;
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
}
