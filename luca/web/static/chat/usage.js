/**
 * The Usage view, a dialog opened from the top bar: what the signed-in user's answers cost this
 * month (GET /api/me/usage) and, when GET /api/usage answers them (org owners and admins: their
 * organisation; operators: everyone), the spend by member and by model against the organisation's
 * monthly budget. A 403 there just leaves that part out. Budgets are read when the API has them
 * (GET /api/org's and /api/org/members' monthly_budget_usd).
 */
import { request } from "../app.js";
import { budgetLine, groupTable, money, renderGroups, renderTotals } from "../spend.js";

const $ = (id) => document.getElementById(id);
let dom = null;
let user = null;
let generation = 0;

const has = (object, name) => object && typeof object === "object" && Object.hasOwn(object, name);
const value = (result) => (result.status === "fulfilled" ? result.value : null);

function monthLabel(report) {
  return report && report.from && report.to ? `${report.from} – ${report.to} (UTC)` : "";
}

function renderMine(report, budget) {
  renderTotals(dom.mineTotals, report.totals);
  dom.mineBudget.replaceChildren(...(budget !== undefined ? [budgetLine(report.totals?.cost_usd, budget)] : []));
  renderGroups(dom.mineModels, report.items);
  dom.range.textContent = monthLabel(report);
}

async function renderOrganisation(byUser, current) {
  const [byModel, org, members, users] = await Promise.allSettled([
    request("/api/usage?group_by=model"),
    request("/api/org"),
    request("/api/org/members"),
    user && user.is_admin ? request("/api/admin/users?limit=1000") : Promise.reject(new Error("not an operator")),
  ]);
  if (current !== generation) return null;
  const organisation = value(org);
  const people = new Map();
  for (const list of [value(users), value(members)]) {
    for (const person of (list && Array.isArray(list.items) ? list.items : [])) people.set(String(person.id), person);
  }
  const operator = Boolean(user && user.is_admin);
  dom.orgHeading.textContent = operator ? "Everyone (all organisations)" : (organisation?.name || "Your organisation");
  dom.orgBudget.replaceChildren(...(has(organisation, "monthly_budget_usd") ? [
    budgetLine(organisation.month_spent_usd ?? byUser.totals?.cost_usd, organisation.monthly_budget_usd)] : []));
  if (operator && has(organisation, "monthly_budget_usd")) dom.orgBudget.prepend(`${organisation.name}: `);
  renderTotals(dom.orgTotals, byUser.totals, { titlesCost: byUser.titles_cost_usd });
  const memberBudgets = [...people.values()].some((person) => has(person, "monthly_budget_usd"));
  // Members who spent nothing yet are listed too (with their budget), when the member list answered.
  const items = Array.isArray(byUser.items) ? [...byUser.items] : [];
  const listed = new Set(items.map((item) => String(item.group)));
  for (const member of value(members)?.items || []) {
    if (!listed.has(String(member.id))) {
      items.push({ group: String(member.id), answers: 0, cost_usd: "0", saved_usd: "0", cached_share: 0 });
    }
  }
  renderGroups(dom.orgMembers, items, {
    label: (id) => people.get(id)?.email || `user ${id}`,
    budget: memberBudgets ? (id) => {
      const amount = people.get(id)?.monthly_budget_usd;
      return amount === null || amount === undefined ? null : money(amount);
    } : null,
  });
  renderGroups(dom.orgModels, value(byModel)?.items);
  dom.org.hidden = false;
  return people.get(String(user?.id));
}

async function load() {
  const current = ++generation;
  dom.status.textContent = "Loading…";
  const [mine, everyone] = await Promise.allSettled([
    request("/api/me/usage?group_by=model"),
    request("/api/usage?group_by=user"),
  ]);
  if (current !== generation) return;
  let me = null;
  if (everyone.status === "fulfilled") {
    me = await renderOrganisation(everyone.value, current);
    if (current !== generation) return;
  } else {
    dom.org.hidden = true;
  }
  if (mine.status === "fulfilled") {
    const budget = has(me, "monthly_budget_usd") ? me.monthly_budget_usd
      : has(user, "monthly_budget_usd") ? user.monthly_budget_usd : undefined;
    renderMine(mine.value, budget);
    dom.mine.hidden = false;
  }
  const failed = [mine, everyone].find((r) => r.status === "rejected" && r.reason?.status !== 403 && r.reason?.status !== 401);
  dom.status.textContent = failed ? `Some figures could not be loaded: ${failed.reason.message}` : "";
}

/** Open the Usage view and load this month's figures. */
export function openUsage() {
  if (!user) return;
  dom.dialog.showModal();
  load();
}

/** Whose usage the view shows: the signed-in user, or nobody (signed out: the view closes and empties). */
export function usageFor(signedIn) {
  user = signedIn || null;
  generation += 1;
  if (!dom) return;
  if (!user && dom.dialog.open) dom.dialog.close();
  for (const node of [dom.mineTotals, dom.mineBudget, dom.mineModels, dom.orgBudget, dom.orgTotals, dom.orgMembers,
    dom.orgModels]) node.replaceChildren();
  dom.org.hidden = true;
  dom.status.textContent = "";
}

/** Wire the top bar's Usage button and the view's dialog. */
export function setupUsage() {
  dom = {
    button: $("usage-button"), dialog: $("usage-dialog"), status: $("usage-status"), range: $("usage-range"),
    mine: $("usage-mine"), mineTotals: $("usage-mine-totals"), mineBudget: $("usage-mine-budget"),
    mineModels: groupTable($("usage-mine-models"), "By model", "Model"), org: $("usage-org"),
    orgHeading: $("usage-org-heading"), orgBudget: $("usage-org-budget"), orgTotals: $("usage-org-totals"),
    orgMembers: groupTable($("usage-org-members"), "By member", "Member"),
    orgModels: groupTable($("usage-org-models"), "By model", "Model"),
  };
  dom.button.addEventListener("click", openUsage);
  dom.dialog.addEventListener("click", (event) => {
    if (event.target === dom.dialog) dom.dialog.close(); // a click on the backdrop
  });
}
