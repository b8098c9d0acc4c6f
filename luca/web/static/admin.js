/**
 * The operator page: alerts, this month's spend (GET /api/usage: totals, by model, by user, what
 * deduplication saved), circuit breakers (with reset), queues, cache hit rates and a 14-day chart
 * of messages, refreshed every few seconds. Nothing is asked of the admin API unless
 * GET /api/auth/session says the user is an admin; a 403 stops everything.
 */
import { el, longTime, request, setupSession, showNotice, svg } from "./app.js";
import { groupTable, renderGroups, renderTotals } from "./spend.js";

const REFRESH_MS = 5000;

const $ = (id) => document.getElementById(id);
const dom = {
  dashboard: $("dashboard"),
  notAuthorised: $("not-authorised"),
  refreshed: $("refreshed"),
  alertList: $("alert-list"),
  alertsCount: $("alerts-count"),
  breakerRows: $("breaker-rows"),
  queueRows: $("queue-rows"),
  queueMode: $("queue-mode"),
  queueRedis: $("queue-redis"),
  cacheStats: $("cache-stats"),
  chart: $("analytics-chart"),
  analyticsTotals: $("analytics-totals"),
  spendRange: $("spend-range"),
  spendTotals: $("spend-totals"),
  spendModels: groupTable($("spend-models"), "By model", "Model"),
  spendUsers: groupTable($("spend-users"), "By user", "User"),
};
const emails = new Map(); // user id -> email, from GET /api/admin/users
const asked = new Set(); // user ids looked up already (one missing from the list is not asked for again)

let timer = null;
let running = false;
let inFlight = false;

setupSession({
  onSignedIn(user) {
    if (!user.is_admin) {
      notAuthorised();
      return;
    }
    dom.notAuthorised.hidden = true;
    dom.dashboard.hidden = false;
    running = true;
    refresh();
    timer = setInterval(refresh, REFRESH_MS);
  },
  onSignedOut() {
    stop();
    dom.dashboard.hidden = true;
    dom.notAuthorised.hidden = true;
  },
});

function stop() {
  running = false;
  clearInterval(timer);
  timer = null;
}

function notAuthorised() {
  stop();
  dom.dashboard.hidden = true;
  dom.notAuthorised.hidden = false;
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && running) refresh();
});

// -- formatting --------------------------------------------------------------------------------

function percent(rate) {
  return rate === null || rate === undefined ? "—" : `${(rate * 100).toFixed(rate >= 0.995 || rate === 0 ? 0 : 1)} %`;
}

function number(value) {
  return value === null || value === undefined ? "—" : Number(value).toLocaleString();
}

function humanise(name) {
  const spaced = String(name).replace(/_/g, " ").replace(/([a-z])([A-Z])/g, "$1 $2").toLowerCase();
  return spaced.charAt(0).toUpperCase() + spaced.slice(1);
}

function statEntries(target, pairs) {
  target.replaceChildren(...pairs.flatMap(([term, value, extra]) => [
    el("dt", { text: term }),
    el("dd", { class: extra || null, text: value }),
  ]));
}

// -- refresh -----------------------------------------------------------------------------------------

async function refresh() {
  if (!running || inFlight || document.hidden) return;
  inFlight = true;
  try {
    const names = ["alerts", "breakers", "queue-stats", "cache-stats", "analytics"];
    const results = await Promise.allSettled([
      ...names.map((name) => request(`/api/admin/${name}`)),
      request("/api/usage?group_by=model"),
      request("/api/usage?group_by=user"),
    ]);
    if (!running) return;
    if (results.some((r) => r.status === "rejected" && r.reason && r.reason.status === 403)) {
      notAuthorised();
      return;
    }
    const [alerts, breakers, queues, cache, analytics, byModel, byUser] = results;
    if (byUser.status === "fulfilled") await knowUsers(byUser.value.items);
    show(byModel, renderSpend(byUser), dom.spendTotals);
    show(alerts, renderAlerts, dom.alertList);
    show(breakers, renderBreakers, dom.breakerRows);
    show(queues, renderQueues, dom.queueRows);
    show(cache, renderCache, dom.cacheStats);
    show(analytics, renderAnalytics, dom.chart);
    const failed = results.find((r) => r.status === "rejected" && r.reason && r.reason.status !== 401);
    dom.refreshed.textContent = failed
      ? `Some figures could not be loaded: ${failed.reason.message}`
      : `Updated ${new Date().toLocaleTimeString()} · every ${REFRESH_MS / 1000} s`;
  } finally {
    inFlight = false;
  }
}

function show(result, render, target) {
  if (result.status === "fulfilled") {
    render(result.value);
    target.closest(".card")?.classList.remove("stale");
  } else {
    target.closest(".card")?.classList.add("stale");
  }
}

// -- alerts ------------------------------------------------------------------------------------------

function renderAlerts(data) {
  const alerts = Array.isArray(data.alerts) ? data.alerts : [];
  const firing = alerts.filter((a) => a.firing).length;
  dom.alertsCount.textContent = firing ? `${firing} firing` : "all clear";
  dom.alertsCount.dataset.state = firing ? "bad" : "good";
  dom.alertList.replaceChildren(...alerts.map((alert) => el("li", { class: `alert ${alert.firing ? "firing" : "ok"}` },
    el("span", { class: "dot", "aria-hidden": "true" }),
    el("div", { class: "alert-body" },
      el("p", { class: "alert-name" },
        el("strong", { text: humanise(alert.name) }),
        el("span", { class: "alert-state", text: alert.firing ? "firing" : "ok" })),
      el("p", { class: "alert-message", text: alert.message || "" }),
      el("p", { class: "alert-figures muted small",
        text: `value ${formatAlertValue(alert.value, alert.threshold)} · threshold ${formatAlertValue(alert.threshold, alert.threshold)}`
          + (alert.since ? ` · since ${longTime(alert.since)}` : "") })))));
}

function formatAlertValue(value, threshold) {
  if (typeof value !== "number") return String(value ?? "—");
  return typeof threshold === "number" && threshold > 0 && threshold < 1 ? percent(value) : number(value);
}

// -- spend this month ---------------------------------------------------------------------------------

/** Learn the emails of users seen in a report (one GET /api/admin/users while someone is new). */
async function knowUsers(items) {
  const unknown = (Array.isArray(items) ? items : []).map((item) => String(item.group))
    .filter((id) => !emails.has(id) && !asked.has(id));
  if (!unknown.length) return;
  for (const id of unknown) asked.add(id);
  try {
    const users = await request("/api/admin/users?limit=1000");
    for (const user of users.items || []) emails.set(String(user.id), user.email);
  } catch {
    // the rows then name user ids
  }
}

function renderSpend(byUser) {
  return (byModel) => {
    renderTotals(dom.spendTotals, byModel.totals, { titlesCost: byModel.titles_cost_usd });
    dom.spendRange.textContent = byModel.from && byModel.to ? `${byModel.from} – ${byModel.to} UTC` : "";
    renderGroups(dom.spendModels, byModel.items);
    if (byUser.status === "fulfilled") {
      renderGroups(dom.spendUsers, byUser.value.items, { label: (id) => emails.get(id) || `user ${id}` });
    }
  };
}

// -- breakers ----------------------------------------------------------------------------------------

const BREAKER_NAMES = { database: "database", externalAPI: "external-api", redis: "redis" };
const BREAKER_LABELS = { database: "Database", externalAPI: "External API", redis: "Redis" };

function breakerList(data) {
  const list = [];
  for (const [key, name] of Object.entries(BREAKER_NAMES)) {
    if (data[key]) list.push({ name, label: BREAKER_LABELS[key], ...data[key] });
  }
  for (const [name, breaker] of Object.entries(data.aiProviders || {})) {
    list.push({ name, label: `AI provider ${name.replace(/^AI-/, "")}`, ...breaker });
  }
  return list;
}

function renderBreakers(data) {
  dom.breakerRows.replaceChildren(...breakerList(data).map((breaker) => {
    const stats = breaker.stats || {};
    const state = String(breaker.state || "unknown");
    const reset = el("button", {
      type: "button", class: "button subtle small", "aria-label": `Reset the ${breaker.name} breaker`,
      onclick: () => resetBreaker(breaker.name, reset),
    }, "Reset");
    return el("tr", { dataset: { breaker: breaker.name } },
      el("th", { scope: "row" }, el("span", { class: "breaker-label", text: breaker.label }),
        el("code", { class: "breaker-name", text: breaker.name })),
      el("td", {}, el("span", { class: `state state-${state.replace(/[^a-z-]/g, "")}`, text: state })),
      el("td", { class: "num", text: number(stats.failures) }),
      el("td", { class: "num", text: number(stats.successes) }),
      el("td", { class: "num", text: number(stats.rejections) }),
      el("td", { class: "small" }, stats.lastFailureAt
        ? [el("time", { class: "failure-time", datetime: stats.lastFailureAt, text: longTime(stats.lastFailureAt) }),
          el("span", { class: "failure-text", title: stats.lastFailure || "", text: stats.lastFailure || "" })]
        : "—"),
      el("td", {}, reset));
  }));
}

async function resetBreaker(name, button) {
  button.disabled = true;
  try {
    await request(`/api/admin/breakers/${encodeURIComponent(name)}/reset`, { method: "POST" });
    showNotice(`The ${name} breaker is closed again.`, { kind: "info", timeout: 4000 });
    refresh();
  } catch (err) {
    if (err.status === 403) notAuthorised();
    else if (err.status !== 401) showNotice(err.message);
  } finally {
    button.disabled = false;
  }
}

// -- queues ------------------------------------------------------------------------------------------

const QUEUE_LABELS = { titleGeneration: "Titles", fileProcessing: "Documents", analytics: "Analytics" };

function renderQueues(data) {
  const queues = Object.entries(data).filter(([, value]) => value && typeof value === "object" && "waiting" in value);
  dom.queueRows.replaceChildren(...queues.map(([key, queue]) => el("tr", { dataset: { queue: key } },
    el("th", { scope: "row", text: QUEUE_LABELS[key] || humanise(key) }),
    el("td", { class: "num", text: number(queue.waiting) }),
    el("td", { class: "num", text: number(queue.active) }),
    el("td", { class: "num", text: number(queue.completed) }),
    el("td", { class: `num${queue.failed ? " bad" : ""}`, text: number(queue.failed) }),
    el("td", { class: "num", text: number(queue.retried) }),
    el("td", { class: "num", text: percent(queue.failureRate) }))));
  dom.queueMode.textContent = data.mode ? `${data.mode} mode` : "";
  const redis = data.redis || {};
  dom.queueRedis.textContent = `Redis: ${redis.status || "unknown"}${redis.ready ? " (ready)" : ""}`;
}

// -- cache -------------------------------------------------------------------------------------------

function renderCache(data) {
  const memory = data.memory || {};
  const redis = data.redis || {};
  const dedup = data.dedup || {};
  statEntries(dom.cacheStats, [
    ["Hit rate, overall", percent(data.hitRate), "big"],
    ["Memory", `${percent(memory.hitRate)} · ${number(memory.hits)} hits, ${number(memory.misses)} misses, ${number(memory.keys)} keys`],
    ["Redis", redis.configured === false ? String(redis.status || "not configured")
      : `${percent(redis.hitRate)} · ${number(redis.hits)} hits, ${number(redis.misses)} misses (${redis.status || "unknown"})`],
    ["AI answers reused", `${number(dedup.savedCalls)} calls saved · hit rate ${percent(dedup.hitRate)}`],
    ["Status", data.enabled === false ? "disabled (DISABLE_CACHE)" : "on"],
  ]);
}

// -- analytics: a bar chart drawn as inline SVG ------------------------------------------------------

const CHART = { width: 960, height: 220, top: 22, bottom: 30, left: 8, right: 8 };

function renderAnalytics(data) {
  const days = Array.isArray(data.days) ? data.days : [];
  const values = days.map((day) => (day.totals && day.totals.messages) || 0);
  const max = Math.max(1, ...values);
  const total = values.reduce((a, b) => a + b, 0);
  const plotHeight = CHART.height - CHART.top - CHART.bottom;
  const slot = (CHART.width - CHART.left - CHART.right) / Math.max(1, days.length);
  const barWidth = Math.max(4, slot * 0.62);
  const label = `Messages per day from ${data.from} to ${data.to}: ${total} in all, at most ${Math.max(0, ...values)} in a day.`;

  const chart = svg("svg", {
    class: "bar-chart", viewBox: `0 0 ${CHART.width} ${CHART.height}`, role: "img", "aria-label": label,
    preserveAspectRatio: "xMidYMid meet",
  }, svg("title", { text: label }));
  const baseline = CHART.height - CHART.bottom;
  for (const fraction of [0, 0.5, 1]) {
    const y = baseline - plotHeight * fraction;
    chart.append(svg("line", { class: fraction ? "grid" : "axis", x1: CHART.left, x2: CHART.width - CHART.right, y1: y, y2: y }));
  }
  days.forEach((day, index) => {
    const value = values[index];
    const height = value ? Math.max(2, (value / max) * plotHeight) : 0;
    const x = CHART.left + index * slot + (slot - barWidth) / 2;
    const date = new Date(`${day.day}T00:00:00Z`);
    const dayLabel = String(date.getUTCDate());
    const bar = svg("g", { class: "bar" },
      svg("title", { text: `${day.day}: ${value} message${value === 1 ? "" : "s"}, ${number(day.totals?.cached)} from cache` }),
      svg("rect", { x: x.toFixed(1), y: (baseline - height).toFixed(1), width: barWidth.toFixed(1), height: height.toFixed(1), rx: 2 }),
      svg("text", { class: "day-label", x: (x + barWidth / 2).toFixed(1), y: CHART.height - 10, "text-anchor": "middle", text: dayLabel }));
    if (value) {
      bar.append(svg("text", { class: "value-label", x: (x + barWidth / 2).toFixed(1), y: (baseline - height - 6).toFixed(1), "text-anchor": "middle", text: String(value) }));
    }
    chart.append(bar);
  });
  dom.chart.replaceChildren(chart, el("figcaption", { class: "muted small", text: `${data.from} – ${data.to} (UTC), from the daily roll-ups` }));

  const totals = data.totals || {};
  statEntries(dom.analyticsTotals, [
    ["Messages", number(totals.messages)],
    ["Tokens in / out", `${number(totals.tokens_in)} / ${number(totals.tokens_out)}`],
    ["Answered from cache", number(totals.cached)],
    ["Estimated cost", `$${Number(totals.cost_usd || 0).toFixed(2)}`],
  ]);
}
