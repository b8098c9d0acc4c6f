/**
 * The pages that reset and invitation links open (/reset-password?token=, /accept-invitation?token=):
 * one form that sends the link's token with a new password (and, to join, a name). A reset then
 * asks the user to sign in; an accepted invitation is signed in already and goes to the chat.
 */
import { clearToken, request } from "./app.js";

const form = document.getElementById("account-form");
const error = document.getElementById("account-error");
const done = document.getElementById("account-done");
const token = new URLSearchParams(window.location.search).get("token") || "";
// The token stays out of the address bar, the history and anything the page links to from here on.
window.history.replaceState(null, "", window.location.pathname);

if (!token) {
  error.textContent = "This link has no token: open the whole link you were given.";
  form.querySelector("button[type=submit]").disabled = true;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const fields = form.elements;
  const button = form.querySelector("button[type=submit]");
  if (!fields.password.value) {
    error.textContent = "Choose a password.";
    fields.password.focus();
    return;
  }
  button.disabled = true;
  error.textContent = "";
  try {
    if (form.dataset.form === "reset") {
      await request("/api/auth/reset", { method: "POST", auth: false, json: { token, password: fields.password.value } });
      form.hidden = true;
      done.hidden = false;
    } else {
      await request("/api/auth/accept-invitation", {
        method: "POST", auth: false, json: { token, name: fields.name.value.trim(), password: fields.password.value },
      });
      clearToken(); // the new member's session, not a token kept from before
      window.location.assign("/");
    }
  } catch (err) {
    error.textContent = err.code === "invalid_token"
      ? "This link is used or has expired. Ask for a new one." : err.message;
  } finally {
    button.disabled = !token;
  }
});
