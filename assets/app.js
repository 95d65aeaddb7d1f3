// opsdeck's one script. Pages work without it; it adds live figures on the Overview, sortable
// tables and CSV export. No framework, no build step.

const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";

function formatFigure(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "object" && "amount" in v) {
    const major = v.amount / 100;
    return major.toLocaleString(undefined, { style: "currency", currency: v.currency.toUpperCase() });
  }
  return Number(v).toLocaleString();
}

async function refreshOverview(section) {
  const period = section.dataset.period || "30d";
  try {
    const res = await fetch(`/api/v1/metrics/overview?period=${encodeURIComponent(period)}`, {
      headers: { Accept: "application/json", "X-CSRF-Token": csrf },
      credentials: "same-origin",
    });
    if (!res.ok) return;
    const body = await res.json();
    for (const [name, fig] of Object.entries(body.figures)) {
      const card = section.querySelector(`[data-figure="${name}"]`);
      if (!card || fig === null) continue;
      card.querySelector(".value").textContent = formatFigure(fig.value);
      const change = fig.change_pct === null ? "" : ` (${fig.change_pct > 0 ? "+" : ""}${fig.change_pct.toFixed(1)} %)`;
      card.querySelector(".note").textContent = `previous ${formatFigure(fig.previous)}${change}`;
    }
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

document.querySelectorAll("table[data-sortable]").forEach(makeSortable);
document.querySelectorAll("table[data-export]").forEach(addExport);
const overview = document.getElementById("overview-cards");
if (overview) {
  refreshOverview(overview);
  setInterval(() => refreshOverview(overview), 30_000);
}
