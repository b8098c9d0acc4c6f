/**
 * The organisation screen (#/org, for owners and admins): the members with their roles (changed
 * or removed here; nobody changes their own), and invitations, each a one-time link to copy and
 * hand over. The API decides who may do what; the page only leaves out what it would refuse.
 */
import { copyText, el, longTime, perform, request, showNotice } from "../app.js";
import { confirmAction, showPane, state } from "./state.js";

const ROLES = ["member", "admin", "owner"];
const $ = (id) => document.getElementById(id);
const view = {
  summary: $("org-summary"),
  memberRows: $("member-rows"),
  memberStatus: $("member-status"),
  inviteForm: $("invite-form"),
  inviteRole: $("invite-role"),
  inviteError: $("invite-error"),
  inviteResult: $("invite-result"),
  inviteText: $("invite-text"),
  inviteLink: $("invite-link"),
  inviteCopy: $("invite-copy"),
};

/** Whether the user's role lets them manage the organisation. */
export function managesOrganisation(user) {
  return Boolean(user && (user.role === "owner" || user.role === "admin"));
}

/** The roles the signed-in user may give (only owners make owners). */
function grantable() {
  return state.user.role === "owner" ? ROLES : ROLES.filter((role) => role !== "owner");
}

function memberRow(member) {
  const me = member.id === state.user.id;
  const manageable = !me && (member.role !== "owner" || state.user.role === "owner");
  const who = el("td", {}, el("span", { class: "member-email", text: member.email }),
    member.name ? el("span", { class: "muted small member-name", text: ` ${member.name}` }) : null,
    me ? el("span", { class: "badge", text: "you" }) : null);
  let role = el("span", { text: member.role });
  if (manageable) {
    role = el("select", { "aria-label": `Role of ${member.email}`, onchange: (event) => changeRole(member, event.target) },
      grantable().map((name) => el("option", { value: name, text: name, selected: name === member.role })));
  }
  const action = manageable ? el("button", {
    type: "button", class: "button subtle small danger", text: "Remove", "aria-label": `Remove ${member.email}`,
    onclick: () => removeMember(member),
  }) : null;
  return el("tr", { dataset: { member: String(member.id) } }, who, el("td", {}, role),
    el("td", { text: longTime(member.joined_at) }), el("td", { class: "action" }, action));
}

async function loadMembers() {
  view.memberStatus.textContent = "Loading…";
  try {
    const [organisation, members] = await Promise.all([request("/api/org"), request("/api/org/members")]);
    view.summary.textContent = `${organisation.name} · you are ${organisation.role === "admin" ? "an" : "the"} `
      + `${organisation.role}${organisation.domain ? ` · single sign-on for ${organisation.domain}` : ""}`;
    view.memberRows.replaceChildren(...members.items.map(memberRow));
    view.memberStatus.textContent = "";
  } catch (err) {
    if (err.status !== 401) view.memberStatus.textContent = err.message;
  }
}

async function changeRole(member, select) {
  await perform(() => request(`/api/org/members/${encodeURIComponent(member.id)}`, {
    method: "PATCH", json: { role: select.value },
  }), (updated) => `${updated.email} is now ${updated.role === "admin" ? "an" : "a"} ${updated.role}.`);
  loadMembers();
}

async function removeMember(member) {
  if (!(await confirmAction(`Remove ${member.email}?`, "They are signed out everywhere, their API tokens stop "
    + "working and they can no longer sign in. Their conversations stay.", "Remove"))) return;
  await perform(() => request(`/api/org/members/${encodeURIComponent(member.id)}`, { method: "DELETE" }),
    `${member.email} was removed; their sessions and tokens have ended.`);
  loadMembers();
}

async function invite(event) {
  event.preventDefault();
  const fields = view.inviteForm.elements;
  const email = fields.email.value.trim();
  view.inviteError.textContent = "";
  if (!email) {
    view.inviteError.textContent = "Give the colleague's email.";
    fields.email.focus();
    return;
  }
  try {
    const invitation = await request("/api/org/invitations", { method: "POST", json: { email, role: fields.role.value } });
    view.inviteText.textContent = `Send ${email} this link: it works once, until ${longTime(invitation.expires_at)}.`;
    view.inviteLink.value = invitation.url;
    view.inviteResult.hidden = false;
    view.inviteLink.focus();
    view.inviteLink.select();
    fields.email.value = "";
  } catch (err) {
    if (err.status !== 401) view.inviteError.textContent = err.message;
  }
}

/** Show the organisation screen (owners and admins; anyone else is sent to the chat). */
export function showOrg() {
  if (!managesOrganisation(state.user)) {
    window.location.hash = "";
    return;
  }
  showPane("org");
  document.title = "Organisation — Luca";
  view.inviteResult.hidden = true;
  view.inviteRole.replaceChildren(...grantable().map((name) => el("option", { value: name, text: name })));
  loadMembers();
}

/** Wire the invitation form and its Copy button. */
export function setupOrg() {
  view.inviteForm.addEventListener("submit", invite);
  view.inviteCopy.addEventListener("click", async () => {
    view.inviteLink.select();
    showNotice(await copyText(view.inviteLink.value) ? "Link copied." : "Select the link and copy it.",
      { kind: "info", timeout: 3000 });
  });
}
