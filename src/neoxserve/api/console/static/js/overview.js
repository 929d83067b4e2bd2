// Overview: the model, the engine's state and live tokens/s (from two readings of generation_tokens_total).
import { get } from "./api.js";
import { COLORS, liveLine } from "./charts.js";
import { clear, h, messageArea, number } from "./dom.js";

const POLL_MS = 2000;

function card(label, testid, value, note) {
  return h("div", { class: "stat card", "data-testid": testid },
    h("div", { class: "label" }, label),
    h("div", { class: "value" }, value),
    note ? h("div", { class: "note" }, note) : null);
}

function finished(stats) {
  const byReason = stats.requests_finished_total || {};
  return Object.values(byReason).reduce((a, b) => a + b, 0);
}

export function render(main) {
  const message = messageArea();
  const cards = h("div", { class: "grid" });
  const chartBox = h("div", { class: "chart", "data-testid": "tokens-chart" });
  main.append(message, cards, h("section", { class: "card" }, h("h2", null, "Tokens per second"), chartBox));
  const chart = liveLine(chartBox, "tokens/s", COLORS.blue);
  let last = null;          // {time, tokens} of the previous reading
  let rate = 0;

  async function refresh() {
    let o;
    try {
      o = await get("/overview");
    } catch (e) {
      message.show(e.message);
      return;
    }
    message.clear();
    const s = o.stats || {};
    const tokens = s.generation_tokens_total;
    if (last && tokens !== undefined && o.time > last.time) {
      rate = Math.max(0, tokens - last.tokens) / (o.time - last.time);   // a restarted engine counts from 0
      chart.push(o.time, rate);
    }
    if (tokens !== undefined) last = { time: o.time, tokens };
    const m = o.model || {};
    const used = s.kv_blocks_used;
    const total = s.kv_blocks_total;
    const kvShare = total ? `${((100 * used) / total).toFixed(1)} %` : "—";
    const proposed = s.spec_proposed_tokens_total || 0;
    const accepted = s.spec_accepted_tokens_total || 0;
    clear(cards,
      card("Model", "model", m.name || "—", m.path),
      card("Device", "device", m.device || "—"),
      card("Dtype", "dtype", m.dtype || "—"),
      card("Kernels", "kernels", m.kernels || "—", "native CPU kernels' instruction set"),
      card("Context", "context", number(m.max_context), m.is_chat ? "chat model" : "completion model"),
      card("Engine", "engine", o.ready ? "ready" : "not ready", o.engine_alive ? "process alive" : "process down"),
      card("Running", "running", number(s.running)),
      card("Waiting", "waiting", number(s.waiting)),
      card("KV cache", "kv", kvShare, total ? `${number(used)} of ${number(total)} blocks` : null),
      card("Tokens/s", "tokens-per-second", last ? rate.toFixed(1) : "—",
           `${number(tokens)} generated in total`),
      card("Restarts", "restarts", number(o.restarts),
           o.restarts === null ? "not reported (no engine supervisor)" : "engine restarts since start"),
      card("Requests finished", "finished", number(finished(s)),
           `prefix cache hit rate ${((s.prefix_cache_hit_rate || 0) * 100).toFixed(1)} %`),
      card("Speculation", "speculation", proposed ? `${((100 * accepted) / proposed).toFixed(1)} %` : "—",
           `${number(accepted)} of ${number(proposed)} draft tokens accepted`),
      card("Apps / services", "counts", `${number(o.apps)} / ${number(o.services)}`),
    );
    cards.classList.toggle("down", !o.ready);
  }

  refresh();
  const timer = setInterval(refresh, POLL_MS);
  return () => { clearInterval(timer); chart.destroy(); };
}
