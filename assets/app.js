// opsdeck's one script. Pages work without it; it adds live figures on the Overview and the
// Integrations grid, sortable tables and CSV export. No framework, no build step.

const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";

function formatFigure(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "object" && "amount" in v) {
    const major = v.amount / 100;
    return major.toLocaleString(undefined, { style: "currency", currency: v.currency.toUpperCase() });
  }
  return Number(v).toLocaleString();
}

function applyFigures(section, figures) {
  for (const [name, fig] of Object.entries(figures)) {
    const card = section.querySelector(`[data-figure="${name}"]`);
    if (!card || fig === null) continue;
    card.querySelector(".value").textContent = formatFigure(fig.value);
    const change = fig.change_pct === null ? "" : ` (${fig.change_pct > 0 ? "+" : ""}${fig.change_pct.toFixed(1)} %)`;
    card.querySelector(".note").textContent = `previous ${formatFigure(fig.previous)}${change}`;
  }
}

async function refreshOverview(section) {
  const query = section.dataset.query || `period=${encodeURIComponent(section.dataset.period || "30d")}`;
  try {
    const res = await fetch(`/api/v1/metrics/overview?${query}`, {
      headers: { Accept: "application/json", "X-CSRF-Token": csrf },
      credentials: "same-origin",
    });
    if (!res.ok) return;
    const body = await res.json();
    applyFigures(section, body.figures);
  } catch (_) {
    // Offline or signed out: keep the server-rendered state.
  }
}

function makeSortable(table) {
  const headers = table.tHead?.rows[0]?.cells ?? [];
  [...headers].forEach((th, i) => {
    th.dataset.sort = "";
    th.addEventListener("click", () => {
      const body = table.tBodies[0];
      const asc = th.dataset.sort !== "asc";
      [...headers].forEach((h) => (h.dataset.sort = ""));
      th.dataset.sort = asc ? "asc" : "desc";
      const rows = [...body.rows].sort((a, b) => {
        const x = a.cells[i]?.textContent.trim() ?? "";
        const y = b.cells[i]?.textContent.trim() ?? "";
        const nx = Number(x), ny = Number(y);
        const cmp = !isNaN(nx) && !isNaN(ny) && x !== "" && y !== "" ? nx - ny : x.localeCompare(y);
        return asc ? cmp : -cmp;
      });
      rows.forEach((r) => body.appendChild(r));
    });
  });
}

function csvCell(s) {
  return /[",\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

function addExport(table) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "export";
  button.textContent = "Export CSV";
  button.addEventListener("click", () => {
    const lines = [...table.rows].map((r) => [...r.cells].map((c) => csvCell(c.textContent.trim())).join(","));
    const blob = new Blob([lines.join("\n") + "\n"], { type: "text/csv" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = table.dataset.export;
    a.click();
    URL.revokeObjectURL(a.href);
  });
  table.before(button);
}

// The Integrations grid: states, uptime, p95, last check and last error from the JSON API,
// formatted as the server formats them. Rows added or removed since the page loaded wait for a
// reload; the sparkline too (it changes by the hour).
const percent = (v) => (v === null || v === undefined ? "—" : `${(v * 100).toFixed(2)} %`);
const upto = (v) => (v === null || v === undefined ? "—" : `≤ ${v} ms`);

function age(iso) {
  if (!iso) return "never";
  const s = Math.max(0, Math.floor((Date.now() - Date.parse(iso)) / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.floor(s / 60)} min ago`;
  if (s < 172800) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

function shortError(text) {
  const chars = [...text];
  return chars.length <= 80 ? text : chars.slice(0, 79).join("") + "…";
}

async function refreshGrid(table) {
  try {
    const res = await fetch(table.dataset.live, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (!res.ok) return;
    const { integrations } = await res.json();
    const counts = {};
    for (const i of integrations) {
      counts[i.state] = (counts[i.state] ?? 0) + 1;
      const row = table.querySelector(`tr[data-id="${i.id}"]`);
      if (!row) continue;
      const badge = row.querySelector(".state");
      badge.textContent = i.state;
      badge.className = `state state-${i.state}`;
      row.querySelector(".uptime-24h").textContent = percent(i.uptime["24h"]);
      row.querySelector(".uptime-7d").textContent = percent(i.uptime["7d"]);
      row.querySelector(".uptime-30d").textContent = percent(i.uptime["30d"]);
      row.querySelector(".p95").textContent = upto(i.latency_ms.p95);
      const checked = row.querySelector(".last-check time");
      checked.textContent = age(i.last_check);
      if (i.last_check) checked.title = new Date(i.last_check).toISOString();
      const error = row.querySelector(".last-error");
      error.textContent = "";
      if (i.last_error) {
        const span = document.createElement("span");
        span.title = i.last_error;
        span.textContent = shortError(i.last_error);
        error.append(span);
      }
    }
    // The API lists problems first; follow its order unless someone sorted by a column.
    if (!table.querySelector("th[data-sort='asc'], th[data-sort='desc']")) {
      const body = table.tBodies[0];
      for (const i of integrations) {
        const row = body.querySelector(`tr[data-id="${i.id}"]`);
        if (row) body.append(row);
      }
    }
    document.querySelectorAll("#state-counts [data-state]").forEach((card) => {
      card.querySelector(".value").textContent = counts[card.dataset.state] ?? 0;
    });
  } catch (_) {
    // Offline or signed out: keep what is shown.
  }
}

document.querySelectorAll("table[data-sortable]").forEach(makeSortable);
document.querySelectorAll("table[data-export]").forEach(addExport);
const overview = document.getElementById("overview-cards");
if (overview) {
  refreshOverview(overview);
  setInterval(() => refreshOverview(overview), 30_000);
}
const grid = document.querySelector("table[data-live]");
if (grid) setInterval(() => refreshGrid(grid), 10_000);

// Live updates from the event stream (GET /api/v1/stream, the session cookie authenticates
// it): headline cards from `metrics_update` (30-day figures), the status grid on
// `system_status`, new entries at the top of an alert list (`#alert-list`) on `alert`. The
// polling above stays as the fallback; a `lagged` notice (events missed) re-reads everything.
function addAlert(list, ev) {
  const d = ev.data ?? {};
  const li = document.createElement("li");
  li.className = `alert alert-${d.status ?? d.state ?? "info"} severity-${d.severity ?? "info"}`;
  const when = document.createElement("time");
  when.dateTime = new Date(ev.at).toISOString();
  when.textContent = new Date(ev.at).toLocaleString();
  li.append(when, ` ${ev.type}: ${d.summary ?? ""}`);
  list.prepend(li);
  while (list.children.length > 50) list.lastElementChild.remove();
}

function openStream() {
  const alerts = document.getElementById("alert-list");
  if (!window.EventSource || !(overview || grid || alerts)) return;
  const source = new EventSource("/api/v1/stream");
  source.addEventListener("metrics_update", (e) => {
    if (!overview) return;
    const ev = JSON.parse(e.data);
    if ((overview.dataset.period || "30d") === "30d" && ev.data?.figures) applyFigures(overview, ev.data.figures);
    else refreshOverview(overview);
  });
  source.addEventListener("system_status", () => grid && refreshGrid(grid));
  source.addEventListener("alert", (e) => alerts && addAlert(alerts, JSON.parse(e.data)));
  source.addEventListener("lagged", () => {
    if (overview) refreshOverview(overview);
    if (grid) refreshGrid(grid);
  });
}
openStream();
