/**
 * A usage report (GET /api/usage, GET /api/me/usage) as both pages show it: money from the API's
 * exact decimal strings, the totals as a list of figures, and a table row per group (model, user).
 * The operator page (admin.js) and the chat page's Usage view (chat/usage.js) share it.
 */
import { el } from "./app.js";

const CENTS = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 2 });
const SMALL = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 4 });
const TINY = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", maximumSignificantDigits: 2 });

/** An amount of USD for reading: cents from $1, four places below, two significant digits below $0.0001. */
export function usd(value) {
  const amount = Number(value);
  if (value === null || value === undefined || value === "" || !Number.isFinite(amount)) return "—";
  const size = Math.abs(amount);
  if (size === 0 || size >= 1) return CENTS.format(amount);
  return (size >= 0.0001 ? SMALL : TINY).format(amount);
}

/** An amount as an element that keeps the exact figure in data-usd (and its title). */
export function money(value, className = "money") {
  const exact = typeof value === "string" || typeof value === "number" ? String(value) : "";
  return el("span", { class: className, dataset: { usd: exact }, title: exact ? `$${exact}` : null, text: usd(value) });
}

/** A share (0..1) as a percentage. */
export function share(value) {
  const rate = Number(value);
  if (value === null || value === undefined || !Number.isFinite(rate)) return "—";
  return `${(rate * 100).toFixed(rate === 0 || rate >= 0.995 ? 0 : 1)} %`;
}

const count = (value) => (Number.isFinite(Number(value)) ? Number(value).toLocaleString() : "—");

/** Fill a <dl> with a report's totals: spent, saved by deduplication, answers, cached share, tokens. */
export function renderTotals(list, totals, { titlesCost } = {}) {
  const t = totals && typeof totals === "object" ? totals : {};
  const pairs = [
    ["Spent on answers", money(t.cost_usd, "money big"), "spent"],
    ["Saved by deduplication", money(t.saved_usd, "money saved"), "saved"],
    ["Answers", count(t.answers), "answers"],
    ["Answered from cache", share(t.cached_share), "cached"],
    ["Tokens in / out", `${count(t.tokens_in)} / ${count(t.tokens_out)}`, "tokens"],
  ];
  if (titlesCost !== undefined) pairs.push(["Spent on titles", money(titlesCost), "titles"]);
  list.replaceChildren(...pairs.flatMap(([term, value, key]) => [
    el("dt", { text: term }), el("dd", { dataset: { figure: key } }, value)]));
}

/** Put a table of groups in container: a caption, the group's column (first) and the figures; its <tbody>. */
export function groupTable(container, caption, first) {
  const body = el("tbody");
  const head = (text, extra = "") => el("th", { scope: "col", class: `num${extra}`, text });
  container.replaceChildren(el("table", { class: "data" },
    el("caption", { text: caption }),
    el("thead", {}, el("tr", {}, el("th", { scope: "col", text: first }), head("Answers"), head("Spent"), head("Saved"),
      head("From cache"), el("th", { scope: "col", class: "num budget-head", text: "Budget", hidden: true }))),
    body));
  return body;
}

/**
 * Fill a group table's <tbody> with a row per group, dearest first: label(group) names it;
 * budget(group), when given, adds the group's monthly budget. An empty report says so in one row.
 */
export function renderGroups(body, items, { label = (group) => group, budget = null, empty = "Nothing spent yet this month." } = {}) {
  const rows = Array.isArray(items) ? items.filter((item) => item && typeof item === "object") : [];
  const columns = budget ? 6 : 5;
  const budgetHead = body.closest("table")?.querySelector(".budget-head");
  if (budgetHead) budgetHead.hidden = !budget;
  if (!rows.length) {
    body.replaceChildren(el("tr", {}, el("td", { class: "muted", colspan: String(columns), text: empty })));
    return;
  }
  const sorted = [...rows].sort((a, b) => Number(b.cost_usd) - Number(a.cost_usd));
  body.replaceChildren(...sorted.map((item) => el("tr", { dataset: { group: String(item.group) } },
    el("th", { scope: "row", text: label(String(item.group)) }),
    el("td", { class: "num", text: count(item.answers) }),
    el("td", { class: "num" }, money(item.cost_usd)),
    el("td", { class: "num" }, money(item.saved_usd)),
    el("td", { class: "num", text: share(item.cached_share) }),
    budget ? el("td", { class: "num" }, budget(String(item.group)) ?? "—") : null)));
}

/** How much of a budget is spent, as a meter and a sentence ("$12.40 of $50.00 this month, 25 %"). */
export function budgetLine(spent, budget) {
  const limit = Number(budget);
  const used = Number(spent) || 0;
  if (budget === null || budget === undefined || !Number.isFinite(limit)) {
    return el("p", { class: "budget-line muted", text: "No monthly budget is set." });
  }
  const ratio = limit > 0 ? used / limit : (used > 0 ? 1 : 0);
  return el("div", { class: `budget-line${ratio >= 1 ? " over" : ratio >= 0.8 ? " near" : ""}` },
    el("meter", { min: "0", max: "1", low: "0.8", high: "0.9999", optimum: "0", value: String(Math.min(1, ratio)),
      "aria-label": "Share of the monthly budget spent" }),
    el("p", {}, money(spent), ` of `, money(budget), ` this month · ${share(Math.min(ratio, 9.99))}`));
}
