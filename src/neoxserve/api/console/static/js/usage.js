// Usage per day, app and service over a chosen range: totals, charts, table, CSV export.
import { get } from "./api.js";
import { COLORS, dayBars } from "./charts.js";
import { clear, h, messageArea, number } from "./dom.js";

const RANGES = [["7 days", 7], ["30 days", 30], ["90 days", 90]];

function shiftDay(day, delta) {
  const d = new Date(`${day}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + delta);
  return d.toISOString().slice(0, 10);
}

function daysBetween(since, until) {
  const out = [];
  for (let d = since; d <= until && out.length < 3700; d = shiftDay(d, 1)) out.push(d);
  return out;
}

function query(filters) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
  return q.toString();
}


export function render(main) {
  const message = messageArea();
  const since = h("input", { type: "date", name: "since", "aria-label": "from" });
  const until = h("input", { type: "date", name: "until", "aria-label": "to" });
  const app = h("select", { name: "app", "aria-label": "app" }, h("option", { value: "" }, "all apps"));
  const service = h("select", { name: "service", "aria-label": "service" },
    h("option", { value: "" }, "all services"));
  const csv = h("a", { class: "button", "data-testid": "csv", download: "" }, "Export CSV");
  const ranges = RANGES.map(([label, n]) => h("button", { type: "button", class: "small", onclick: () => {
    until.value = today;
    since.value = shiftDay(today, 1 - n);
    load();
  } }, label));
  const totals = h("div", { class: "grid" });
  const callsChart = h("div", { class: "chart", "data-testid": "calls-chart" });
  const tokensChart = h("div", { class: "chart", "data-testid": "tokens-chart" });
  const tableBox = h("div", { class: "table-box" });
  const filters = h("form", { class: "card filters", "data-testid": "usage-filters" },
    h("label", { class: "field" }, h("span", null, "From"), since),
    h("label", { class: "field" }, h("span", null, "To"), until),
    h("label", { class: "field" }, h("span", null, "App"), app),
    h("label", { class: "field" }, h("span", null, "Service"), service),
    h("div", { class: "field" }, h("span", null, "Last"), h("div", { class: "row" }, ranges)),
    h("div", { class: "field push" }, h("span", null, "\u00a0"), csv));
  filters.addEventListener("change", () => load());
  filters.addEventListener("submit", (event) => { event.preventDefault(); load(); });
  main.append(message, filters, totals,
    h("section", { class: "card" }, h("h2", null, "Calls per day"), callsChart),
    h("section", { class: "card" }, h("h2", null, "Tokens per day"), tokensChart),
    h("section", { class: "card" }, h("h2", null, "Per day, app and service"), tableBox));
  let today = null;
  let charts = [];

  function options(select, names) {
    const current = select.value;
    const first = select.firstChild;
    clear(select, first, [...new Set(names)].sort().map((n) => h("option", { value: n }, n)));
    select.value = names.includes(current) ? current : "";
  }

  function draw(rows, days) {
    for (const c of charts) c.destroy();
    const byDay = new Map(days.map((d) => [d, { calls: 0, failed: 0, prompt: 0, completion: 0 }]));
    for (const r of rows) {
      const d = byDay.get(r.day);
      if (!d) continue;
      d.calls += r.calls;
      d.failed += r.failed;
      d.prompt += r.prompt_tokens;
      d.completion += r.completion_tokens;
    }
    const per = (f) => days.map((d) => f(byDay.get(d)));
    clear(callsChart);
    clear(tokensChart);
    charts = [
      // bars overlap: the failed part of each day's calls shows red in front of the blue total
      dayBars(callsChart, null, days, [
        { label: "calls", values: per((d) => d.calls), color: COLORS.blue },
        { label: "failed", values: per((d) => d.failed), color: COLORS.red },
      ]),
      dayBars(tokensChart, null, days, [
        { label: "completion", values: per((d) => d.prompt + d.completion), color: COLORS.green,
          legendValues: per((d) => d.completion) },
        { label: "prompt", values: per((d) => d.prompt), color: COLORS.amber },
      ]),
    ];
    const sum = (f) => rows.reduce((a, r) => a + f(r), 0);
    clear(totals,
      stat("Calls", "total-calls", sum((r) => r.calls)),
      stat("Succeeded", "total-succeeded", sum((r) => r.succeeded)),
      stat("Failed", "total-failed", sum((r) => r.failed)),
      stat("Prompt tokens", "total-prompt", sum((r) => r.prompt_tokens)),
      stat("Completion tokens", "total-completion", sum((r) => r.completion_tokens)));
    const columns = ["Day", "App", "Service", "Calls", "Succeeded", "Failed", "Prompt tokens", "Completion tokens",
                     "Total tokens"];
    clear(tableBox, rows.length ? h("table", { "data-testid": "usage-table" },
      h("thead", null, h("tr", null, columns.map((t) => h("th", null, t)))),
      h("tbody", null, [...rows].reverse().map((r) => h("tr", null,
        h("td", null, r.day), h("td", null, r.app_name), h("td", null, r.api_name),
        h("td", { class: "num" }, number(r.calls)), h("td", { class: "num" }, number(r.succeeded)),
        h("td", { class: "num" }, number(r.failed)),
        h("td", { class: "num" }, number(r.prompt_tokens)), h("td", { class: "num" }, number(r.completion_tokens)),
        h("td", { class: "num" }, number(r.total_tokens)))))) : h("p", { class: "note" }, "No usage in this range."));
  }

  function stat(label, testid, value) {
    return h("div", { class: "stat card", "data-testid": testid }, h("div", { class: "label" }, label),
      h("div", { class: "value" }, number(value)));
  }

  // Filters change while a fetch is in flight; only the answer to the latest request is drawn, so a slower
  // earlier answer (say, the unfiltered first load) never replaces the filtered one.
  let latest = 0;
  async function load() {
    const filter = { since: since.value, until: until.value, app: app.value, service: service.value };
    const ticket = ++latest;
    try {
      const data = await get(`/usage?${query(filter)}`);
      if (ticket !== latest) return;
      message.clear();
      csv.href = `/console/api/usage.csv?${query(filter)}`;
      const days = daysBetween(filter.since || (data.rows[0] || { day: data.today }).day, filter.until || data.today);
      draw(data.rows, days);
    } catch (e) { if (ticket === latest) message.show(e.message); }
  }

  (async () => {
    try {
      const [all, apps, services] = await Promise.all([get("/usage"), get("/apps"), get("/services")]);
      today = all.today;
      options(app, [...apps.apps.map((a) => a.name), ...all.rows.map((r) => r.app_name)]);
      options(service, [...services.services.map((s) => s.api_name), ...all.rows.map((r) => r.api_name)]);
      until.value = today;
      since.value = shiftDay(today, -29);
      await load();
    } catch (e) { message.show(e.message); }
  })();
  return () => { for (const c of charts) c.destroy(); };
}
