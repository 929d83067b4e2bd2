// Playground: stream a completion or a chat from a service as an app, through the public model routes, with a
// short-lived access token the console issues for that app; shows tokens/s and the equivalent curl commands.
import { get, post } from "./api.js";
import { clear, copyable, h, messageArea, optionalNumber } from "./dom.js";

const ROUTE = "/rpc/2.0/ai_custom/v1/wenxinworkshop";
const tokens = new Map();   // app name -> {token, expiresAt}; in memory only

async function accessToken(app) {
  const cached = tokens.get(app);
  if (cached && cached.expiresAt > Date.now() + 60_000) return cached.token;
  const issued = await post("/playground/token", { app });
  tokens.set(app, { token: issued.access_token, expiresAt: Date.now() + issued.expires_in * 1000 });
  return issued.access_token;
}

const shellQuote = (s) => `'${String(s).replaceAll("'", "'\\''")}'`;

function curlCommands(apiKey, url, body) {
  const base = location.origin;
  return [
    `curl ${shellQuote(`${base}/oauth/2.0/token?grant_type=client_credentials&client_id=${apiKey}`
      + "&client_secret=")}"$SECRET_KEY"`,
    `curl -N -XPOST ${shellQuote(`${base}${url}?access_token=`)}"$ACCESS_TOKEN" \\\n`
      + `     -H 'Content-Type: application/json' -d ${shellQuote(JSON.stringify(body))}`,
  ].join("\n");
}

// Yields each JSON object of an SSE response (`data: {...}` frames), or the bare JSON line of an error.
async function* frames(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
    let cut;
    while ((cut = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, cut).trim();
      buffer = buffer.slice(cut + 1);
      if (line.startsWith("data:")) yield JSON.parse(line.slice(5));
      else if (line.startsWith("{")) yield JSON.parse(line);
    }
    if (done) break;
  }
  if (buffer.trim().startsWith("{")) yield JSON.parse(buffer.trim());
}

export function render(main) {
  const message = messageArea();
  const service = h("select", { name: "service", "aria-label": "service", required: true });
  const app = h("select", { name: "app", "aria-label": "app", required: true });
  const mode = h("select", { name: "mode", "aria-label": "mode" },
    h("option", { value: "completions" }, "Completion"), h("option", { value: "chat" }, "Chat"));
  const prompt = h("textarea", { name: "prompt", rows: 4, required: true, "aria-label": "prompt",
                                 value: "Introduce the city Beijing" });
  const temperature = h("input", { name: "temperature", type: "number", step: "any", placeholder: "service default" });
  const maxTokens = h("input", { name: "max_output_tokens", type: "number", step: "any",
                                 placeholder: "service default" });
  const run = h("button", { type: "submit", class: "primary", "data-testid": "run" }, "Run");
  const stop = h("button", { type: "button", disabled: true }, "Stop");
  const output = h("pre", { class: "output", "data-testid": "output", "aria-live": "polite" });
  const stats = h("div", { class: "note", "data-testid": "stream-stats" });
  const curlBox = h("div", { "data-testid": "curl" });
  const form = h("form", { class: "card", "data-testid": "playground-form" },
    h("div", { class: "row" },
      h("label", { class: "field" }, h("span", null, "Service"), service),
      h("label", { class: "field" }, h("span", null, "App"), app),
      h("label", { class: "field" }, h("span", null, "Kind"), mode),
      h("label", { class: "field" }, h("span", null, "Temperature"), temperature),
      h("label", { class: "field" }, h("span", null, "Max output tokens"), maxTokens)),
    h("label", { class: "field" }, h("span", null, "Prompt (chat: the user message)"), prompt),
    h("div", { class: "row" }, run, stop));
  main.append(message, form,
    h("section", { class: "card" }, h("h2", null, "Output"), stats, output),
    h("section", { class: "card" }, h("h2", null, "The same call with curl"), curlBox));
  let apps = [];
  let controller = null;

  function showCurl() {
    const a = apps.find((x) => x.name === app.value);
    if (!service.value || !a) { clear(curlBox); return; }
    const { url, body } = request();
    clear(curlBox, h("pre", { class: "mono" }, curlCommands(a.api_key, url, body)),
      h("p", { class: "note" }, "$SECRET_KEY is the app's Secret Key (shown once when it was created); "
        + "$ACCESS_TOKEN is the access_token the first command returns."),
      copyable(curlCommands(a.api_key, url, body).replace(" \\\n     ", " "), "curl commands"));
  }

  function request() {
    const body = mode.value === "chat"
      ? { messages: [{ role: "user", content: prompt.value }], stream: true }
      : { prompt: prompt.value, stream: true };
    const t = optionalNumber(temperature.value);
    const m = optionalNumber(maxTokens.value);
    if (t !== null) body.temperature = t;
    if (m !== null) body.max_output_tokens = m;
    return { url: `${ROUTE}/${mode.value}/${encodeURIComponent(service.value)}`, body };
  }

  form.addEventListener("input", showCurl);
  form.addEventListener("change", showCurl);
  stop.addEventListener("click", () => controller && controller.abort());
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    message.clear();
    clear(output);
    delete output.dataset.done;
    stats.textContent = "";
    const { url, body } = request();
    controller = new AbortController();
    run.disabled = true;
    stop.disabled = false;
    const started = performance.now();
    let first = null;
    let completion = 0;
    let firstTokens = 0;
    let chunks = 0;
    try {
      const token = await accessToken(app.value);
      const response = await fetch(`${url}?access_token=${encodeURIComponent(token)}`, {
        method: "POST", body: JSON.stringify(body), signal: controller.signal,
        headers: { "Content-Type": "application/json" }, credentials: "omit" });
      for await (const frame of frames(response)) {
        if (frame.error_code) {
          message.show(`error ${frame.error_code}: ${frame.error_msg}`);
          break;
        }
        const now = performance.now();
        chunks += 1;
        completion = frame.usage.total_tokens - frame.usage.prompt_tokens;
        if (first === null) { first = now; firstTokens = completion; }
        output.append(frame.result);
        const rate = now > first ? (completion - firstTokens) / ((now - first) / 1000)
                                 : completion / ((now - started) / 1000);
        stats.textContent = `${completion} tokens in ${chunks} chunks · ${rate.toFixed(1)} tokens/s · `
          + `first chunk after ${Math.round(first - started)} ms`;
        stats.dataset.chunks = String(chunks);
        stats.dataset.tokens = String(completion);
      }
    } catch (e) {
      if (e.name !== "AbortError") message.show(e.message);
    } finally {
      controller = null;
      run.disabled = false;
      stop.disabled = true;
      output.dataset.done = "true";
    }
  });

  (async () => {
    try {
      const [s, a] = await Promise.all([get("/services"), get("/apps")]);
      apps = a.apps;
      clear(service, s.services.map((x) => h("option", { value: x.api_name }, x.api_name)));
      clear(app, apps.map((x) => h("option", { value: x.name }, x.name)));
      const pickApp = () => {
        const allowed = apps.find((x) => x.services.includes(service.value));
        if (allowed && !apps.find((x) => x.name === app.value)?.services.includes(service.value)) app.value = allowed.name;
      };
      service.addEventListener("change", pickApp);
      pickApp();
      if (!s.services.length) message.show("Publish a service first.", "info");
      showCurl();
    } catch (e) { message.show(e.message); }
  })();
  return () => controller && controller.abort();
}
