// opsdeck's one script. Pages work without it; it adds live figures on the Overview and the
// Integrations grid, sortable tables and CSV export. No framework, no build step.

const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";

// The one formatter, with the rules of src/web/format.rs: the live refresh must write exactly
// what the server wrote. Rounding is half away from zero on the value scaled to the shown
// decimals, as on the server; never toLocaleString (it follows the browser's locale).
const ZERO_DECIMAL = ["bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"];
const THREE_DECIMAL = ["bhd", "jod", "kwd", "omr", "tnd"];
const fmt = {
  absent: "—",
  group(digits) {
    return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  },
  // `v` with exactly `decimals` decimals and thousands separators; null when not finite.
  fixed(v, decimals) {
    const unit = 10 ** decimals;
    const scaled = Math.round(Math.abs(v) * unit);
    if (!Number.isFinite(scaled) || scaled >= 9e15) return null;
    const sign = v < 0 && scaled !== 0 ? "-" : "";
    const int = fmt.group(String(Math.floor(scaled / unit)));
    return decimals === 0 ? `${sign}${int}` : `${sign}${int}.${String(scaled % unit).padStart(decimals, "0")}`;
  },
  number(v, maxDecimals) {
    const t = fmt.fixed(Number(v), maxDecimals);
    if (t === null) return fmt.absent;
    return t.includes(".") ? t.replace(/0+$/, "").replace(/\.$/, "") : t;
  },
  count(n) {
    return fmt.fixed(Number(n), 0) ?? fmt.absent;
  },
  quantity(v, unit) {
    const n = fmt.number(v, 1);
    return unit ? `${n} ${unit}` : n;
  },
  percent(v, decimals = 1) {
    const t = fmt.fixed(Number(v), decimals);
    return t === null ? fmt.absent : `${t} %`;
  },
  ratio(v, decimals) {
    return fmt.percent(Number(v) * 100, decimals);
  },
  times(v) {
    return `${fmt.number(v, 2)}×`;
  },
  signed(v, suffix) {
    const t = fmt.fixed(Number(v), 1);
    if (t === null) return fmt.absent;
    return t.startsWith("-") ? `${t}${suffix}` : `+${t}${suffix}`;
  },
  change(pct) {
    return fmt.signed(pct, " %");
  },
  changePp(points) {
    return fmt.signed(points, " pp");
  },
  symbol(currency) {
    const c = currency.toLowerCase();
    return { usd: "$", eur: "€", gbp: "£" }[c] ?? `${c.toUpperCase()} `;
  },
  exponent(currency) {
    const c = currency.toLowerCase();
    return ZERO_DECIMAL.includes(c) ? 0 : THREE_DECIMAL.includes(c) ? 3 : 2;
  },
  // Money in minor units, as the API writes it: {amount, currency}.
  money(m) {
    if (m === null || m === undefined) return fmt.absent;
    const e = fmt.exponent(m.currency);
    const abs = String(Math.abs(m.amount)).padStart(e + 1, "0");
    const int = fmt.group(abs.slice(0, abs.length - e));
    const body = e === 0 ? int : `${int}.${abs.slice(abs.length - e)}`;
    return `${m.amount < 0 ? "-" : ""}${fmt.symbol(m.currency)}${body}`;
  },
  durationMs(ms) {
    const a = Math.abs(ms);
    let t;
    if (a < 10) t = fmt.number(ms, 1) + " ms";
    else if (a < 1000) t = `${fmt.fixed(ms, 0)} ms`;
    else if (a < 10000) t = `${fmt.fixed(ms / 1000, 2)} s`;
    else if (a < 90000) t = `${fmt.fixed(ms / 1000, 1)} s`;
    else t = fmt.age(Math.trunc(ms / 1000));
    return t;
  },
  age(secs) {
    if (secs < 90) return `${secs} s`;
    if (secs < 5400) return `${Math.floor(secs / 60)} min`;
    if (secs < 172800) return `${Math.floor(secs / 3600)} h`;
    return `${Math.floor(secs / 86400)} d`;
  },
  ago(at, now = Date.now()) {
    return `${fmt.age(Math.max(0, Math.floor((now - at) / 1000)))} ago`;
  },
  // The one time format: "2026-12-06 07:17 UTC", from UTC ms or an RFC 3339 string.
  time(at) {
    const d = new Date(typeof at === "string" ? Date.parse(at) : at);
    if (isNaN(d)) return fmt.absent;
    return `${d.toISOString().slice(0, 16).replace("T", " ")} UTC`;
  },
  // A figure by the card's kind (money, percent, times, count), as format::figure.
  figure(kind, v) {
    if (v === null || v === undefined) return fmt.absent;
    if (typeof v === "object" && "amount" in v) return fmt.money(v);
    if (kind === "percent") return fmt.percent(v);
    if (kind === "times") return fmt.times(v);
    return fmt.count(v);
  },
  // The change badge, as format::figure_change: [text, sign] or null.
  figureChange(kind, value, previous, changePct) {
    const sign = (v) => (Math.round(Math.abs(v) * 10) === 0 ? 0 : Math.sign(v));
    if (kind === "percent") {
      if (typeof value !== "number" || typeof previous !== "number") return null;
      const d = value - previous;
      return [fmt.changePp(d), sign(d)];
    }
    return changePct === null || changePct === undefined ? null : [fmt.change(changePct), sign(changePct)];
  },
};

// Writes a card as the server renders it (templates/overview.html): the value, "previous …"
// and the coloured change badge.
function applyFigures(section, figures) {
  for (const [name, fig] of Object.entries(figures)) {
    const card = section.querySelector(`[data-figure="${name}"]`);
    // A figure whose source is on its first sync keeps the server's "pending" wording.
    if (!card || fig === null || fig.pending) continue;
    const kind = card.dataset.kind || "count";
    card.querySelector(".value").textContent = fmt.figure(kind, fig.value);
    const note = card.querySelector(".note");
    note.textContent = `previous ${fmt.figure(kind, fig.previous)}`;
    const change = fmt.figureChange(kind, fig.value, fig.previous, fig.change_pct);
    if (change) {
      const badge = document.createElement("span");
      const direction = change[1] > 0 ? "up" : change[1] < 0 ? "down" : "";
      badge.className = `badge ${direction} rise-${card.dataset.rise === "bad" ? "bad" : "good"}`;
      badge.textContent = change[0];
      note.append(" ", badge);
    }
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

// Sortable tables: a <button> in each header (so the keyboard reaches it), `aria-sort` on the
// sorted one. A cell sorts by its `data-sort` (the raw number the server put there) when it has
// one, else by its text read back as a number when the formatter wrote one ("$1,833.10",
// "98.6 %", "850 ms", "3.75 s"), else as text; empty and "—" cells sort last either way.
const UNIT_SCALE = { ms: 1, s: 1000, min: 60000, h: 3600000, d: 86400000 };
function sortKey(cell) {
  if (!cell) return null;
  const raw = cell.dataset.sort ?? cell.textContent.trim();
  if (raw === "" || raw === fmt.absent) return null;
  if (cell.dataset.sort !== undefined && raw !== "" && !isNaN(Number(raw))) return Number(raw);
  const m = /^(≤ )?([-+]?)(?:[$€£]|[A-Z]{3} )?(\d[\d,]*(?:\.\d+)?)(?: ?(%|pp|×|ms|s|min|h|d)\b| ?[%×])?/u.exec(raw);
  if (m && m[0].length > 0) {
    const n = Number(m[3].replaceAll(",", "")) * (m[2] === "-" ? -1 : 1);
    return n * (UNIT_SCALE[m[4]] ?? 1);
  }
  return raw;
}

function compareKeys(x, y) {
  if (x === null || y === null) return x === y ? 0 : x === null ? 1 : -1;
  if (typeof x === "number" && typeof y === "number") return x - y;
  return String(x).localeCompare(String(y));
}

function sortTable(table, i, asc) {
  const body = table.tBodies[0];
  const rows = [...body.rows].filter((r) => r.cells.length > 1 || !r.querySelector("[colspan]"));
  const keyed = rows.map((r) => [sortKey(r.cells[i]), r]);
  keyed.sort((a, b) => {
    // Empty cells stay last whichever the direction.
    if (a[0] === null || b[0] === null) return compareKeys(a[0], b[0]);
    const c = compareKeys(a[0], b[0]);
    return asc ? c : -c;
  });
  keyed.forEach(([, r]) => body.appendChild(r));
}

function makeSortable(table) {
  const headers = [...(table.tHead?.rows[0]?.cells ?? [])];
  headers.forEach((th, i) => {
    if (th.textContent.trim() === "") return;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "sort";
    button.append(...th.childNodes);
    th.append(button);
    th.setAttribute("aria-sort", "none");
    button.addEventListener("click", () => {
      const asc = th.getAttribute("aria-sort") !== "ascending";
      headers.forEach((h) => h.hasAttribute("aria-sort") && h.setAttribute("aria-sort", "none"));
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      sortTable(table, i, asc);
    });
  });
}

// One CSV rule for the server's exports and this one (src/web/csv.rs): RFC 4180 quoting, and a
// leading `'` on a cell starting with =, +, -, @, tab or CR so a spreadsheet never runs it.
function csvCell(s) {
  const safe = /^[=+\-@\t\r]/.test(s) ? `'${s}` : s;
  return /[",\n\r]/.test(safe) ? `"${safe.replaceAll('"', '""')}"` : safe;
}

// "Export CSV": the server's export of the whole result where the table names one
// (`data-export-url`), else the rows on screen (small tables shown whole).
function addExport(table) {
  const url = table.dataset.exportUrl;
  let control;
  if (url) {
    control = document.createElement("a");
    control.href = url;
    control.setAttribute("download", table.dataset.export);
  } else {
    control = document.createElement("button");
    control.type = "button";
    control.addEventListener("click", () => {
      const lines = [...table.rows].map((r) => [...r.cells].map((c) => csvCell(c.textContent.trim())).join(","));
      const blob = new Blob([lines.join("\n") + "\n"], { type: "text/csv" });
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = table.dataset.export;
      a.click();
      URL.revokeObjectURL(a.href);
    });
  }
  control.className = "export";
  control.textContent = "Export CSV";
  table.before(control);
}

// The Integrations grid: states, uptime, p95, last check and last error from the JSON API,
// formatted as the server formats them. Rows added or removed since the page loaded wait for a
// reload; the sparkline too (it changes by the hour).
const percent = (v) => (v === null || v === undefined ? fmt.absent : fmt.ratio(v, 2));
const upto = (v) => (v === null || v === undefined ? fmt.absent : `≤ ${fmt.durationMs(v)}`);
const age = (iso) => (iso ? fmt.ago(Date.parse(iso)) : "never");

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
      if (i.last_check) {
        checked.title = fmt.time(i.last_check);
        checked.dateTime = new Date(i.last_check).toISOString();
      }
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
    if (!table.querySelector('th[aria-sort="ascending"], th[aria-sort="descending"]')) {
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
  when.textContent = fmt.time(ev.at);
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

// The Alerts page: a "select all" box per rule group for bulk acknowledgement (hidden
// without this script; ticking each box works without it).
document.querySelectorAll("input[data-select-all]").forEach((all) => {
  const boxes = all.closest("table").querySelectorAll('tbody input[type="checkbox"]');
  all.hidden = false;
  all.addEventListener("change", () => boxes.forEach((b) => { b.checked = all.checked; }));
});
