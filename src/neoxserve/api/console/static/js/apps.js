// Apps: list, create (keys shown once), rotate (new keys shown once), delete, limits, allowed services, API keys,
// access codes.
import { del, get, post, put } from "./api.js";
import { clear, confirmDialog, copyable, dateTime, h, messageArea, modal, number, optionalNumber } from "./dom.js";

// The limits an app can have: [field, label, help]. The platform checks the values.
export const LIMIT_FIELDS = [
  ["qps", "QPS", "requests per second (error 18 beyond)"],
  ["daily", "Daily", "requests per day (error 17 beyond)"],
  ["total", "Total", "requests in total (error 19 beyond)"],
  ["rpm", "RPM", "requests per minute (error 336501 beyond)"],
  ["tpm", "TPM", "prompt + completion tokens per minute (error 336502 beyond)"],
];

const CREDENTIALS = [
  ["api_key", "API Key", "client_id at /oauth/2.0/token"],
  ["secret_key", "Secret Key", "client_secret at /oauth/2.0/token"],
  ["access_key", "Access Key", "IAM signatures (bce-auth-v1)"],
  ["secret_access_key", "Secret Access Key", "IAM signatures"],
];

// The credentials of a new or rotated app: shown once, gone from the page when the dialog closes.
export function showKeys(keys, verb) {
  return modal(`Keys of app ${keys.name}`, (close) => h("div", { "data-testid": "keys-dialog" },
    h("p", { class: "message warning" }, `${verb}. These keys are shown only this once: copy the secret keys now, `
      + "the server keeps only a hash (Secret Key) or an encrypted copy (Secret Access Key)."),
    h("dl", { class: "keys" }, CREDENTIALS.map(([field, label, use]) => [
      h("dt", null, label, h("span", { class: "note" }, use)),
      h("dd", null, copyable(keys[field], label)),
    ])),
    h("div", { class: "buttons" },
      h("button", { type: "button", class: "primary", "data-testid": "keys-done", onclick: () => close(true) },
        "I have stored them"))));
}

// How long a new API key lives: [label, seconds or null (until revoked)].
const KEY_LIFETIMES = [["until revoked", null], ["1 day", 86400], ["7 days", 7 * 86400], ["30 days", 30 * 86400],
  ["90 days", 90 * 86400], ["1 year", 365 * 86400]];

// A new API key: shown once, gone from the page when the dialog closes.
function showApiKey(key) {
  return modal(`API key of app ${key.app_name}`, (close) => h("div", { "data-testid": "apikey-dialog" },
    h("p", { class: "message warning" }, "This key is shown only this once: copy it now, the server keeps only "
      + "its hash. Send it as Authorization: Bearer <key> to the v2 and OpenAI routes."),
    h("dl", { class: "keys" },
      h("dt", null, "API key", h("span", { class: "note" }, `id ${key.id}, expires `
        + (key.expires_at === null ? "never" : dateTime(key.expires_at)))),
      h("dd", null, copyable(key.key, "API key"))),
    h("div", { class: "buttons" },
      h("button", { type: "button", class: "primary", "data-testid": "apikey-done", onclick: () => close(true) },
        "I have stored it"))));
}

// The app's API keys (ids only), with create and revoke.
function apiKeysSection(app, message) {
  const tableBox = h("div", { class: "table-box", "data-testid": "apikeys" });
  const lifetime = h("select", { name: "expires_in", "aria-label": "lifetime" },
    KEY_LIFETIMES.map(([label, seconds], i) => h("option", { value: String(i) }, label)));
  async function load() {
    try {
      const { keys } = await get(`/apikeys?app=${encodeURIComponent(app.name)}`);
      clear(tableBox, keys.length ? h("table", null,
        h("thead", null, h("tr", null, ["Key id", "Created", "Expires", "Status", ""].map((t) => h("th", null, t)))),
        h("tbody", null, keys.map((k) => h("tr", { "data-key": k.id },
          h("td", null, h("code", null, k.id)), h("td", null, dateTime(k.created_at)),
          h("td", null, k.expires_at === null ? "never" : dateTime(k.expires_at)), h("td", null, k.status),
          h("td", { class: "actions" }, h("button", { type: "button", class: "small danger", onclick: () => revoke(k) },
            "Revoke")))))) : h("p", { class: "note" }, "No API keys."));
    } catch (e) { message.show(e.message); }
  }
  async function revoke(k) {
    if (!await confirmDialog(`Revoke API key ${k.id}?`, "It stops working at once.", "Revoke")) return;
    try {
      await del(`/apikeys/${encodeURIComponent(k.id)}`);
      message.show(`Revoked API key ${k.id}.`, "ok");
    } catch (e) { message.show(e.message); }
    load();
  }
  async function create() {
    try {
      const { key } = await post(`/apps/${encodeURIComponent(app.name)}/apikeys`,
                                 { expires_in: KEY_LIFETIMES[Number(lifetime.value)][1] });
      await showApiKey(key);
      message.show(`Created API key ${key.id}.`, "ok");
    } catch (e) { message.show(e.message); }
    load();
  }
  load();
  return [tableBox, h("div", { class: "row" }, h("label", { class: "field" }, h("span", null, "Lifetime"), lifetime),
    h("div", { class: "field" }, h("span", null, "\u00a0"),
      h("button", { type: "button", "data-testid": "create-apikey", onclick: create }, "Create API key")))];
}

// A new access code: shown once, gone from the page when the dialog closes.
function showAccessCode(code) {
  return modal(`Access code of app ${code.app_name}`, (close) => h("div", { "data-testid": "accesscode-dialog" },
    h("p", { class: "message warning" }, "This code is shown only this once: copy it now, the server keeps only "
      + "its hash. Send it as Authorization: ACCESSCODE <code> to the model routes (the qianfan SDK's private mode)."),
    h("dl", { class: "keys" },
      h("dt", null, "Access code", h("span", { class: "note" }, `id ${code.id}`)),
      h("dd", null, copyable(code.code, "Access code"))),
    h("div", { class: "buttons" },
      h("button", { type: "button", class: "primary", "data-testid": "accesscode-done", onclick: () => close(true) },
        "I have stored it"))));
}

// The app's access codes (ids only), with create and revoke.
function accessCodesSection(app, message) {
  const tableBox = h("div", { class: "table-box", "data-testid": "accesscodes" });
  async function load() {
    try {
      const { codes } = await get(`/accesscodes?app=${encodeURIComponent(app.name)}`);
      clear(tableBox, codes.length ? h("table", null,
        h("thead", null, h("tr", null, ["Code id", "Created", ""].map((t) => h("th", null, t)))),
        h("tbody", null, codes.map((c) => h("tr", { "data-code": c.id },
          h("td", null, h("code", null, c.id)), h("td", null, dateTime(c.created_at)),
          h("td", { class: "actions" }, h("button", { type: "button", class: "small danger", onclick: () => revoke(c) },
            "Revoke")))))) : h("p", { class: "note" }, "No access codes."));
    } catch (e) { message.show(e.message); }
  }
  async function revoke(c) {
    if (!await confirmDialog(`Revoke access code ${c.id}?`, "It stops working at once.", "Revoke")) return;
    try {
      await del(`/accesscodes/${encodeURIComponent(c.id)}`);
      message.show(`Revoked access code ${c.id}.`, "ok");
    } catch (e) { message.show(e.message); }
    load();
  }
  async function create() {
    try {
      const { code } = await post(`/apps/${encodeURIComponent(app.name)}/accesscodes`);
      await showAccessCode(code);
      message.show(`Created access code ${code.id}.`, "ok");
    } catch (e) { message.show(e.message); }
    load();
  }
  load();
  return [tableBox, h("div", { class: "row" },
    h("button", { type: "button", "data-testid": "create-accesscode", onclick: create }, "Create access code"))];
}

function limitsText(limits) {
  const parts = LIMIT_FIELDS.filter(([f]) => limits[f] !== null && limits[f] !== undefined)
    .map(([f, label]) => `${label} ${number(limits[f])}`);
  return parts.length ? parts.join(" · ") : "none";
}

function limitInputs(prefix, limits) {
  return h("div", { class: "row" }, LIMIT_FIELDS.map(([field, label, help]) => h("label", { class: "field" },
    h("span", null, label), h("input", { name: field, type: "number", step: "any", placeholder: "none",
                                         value: limits[field] ?? "", title: help, id: `${prefix}-${field}` }))));
}

function readLimits(form) {
  return Object.fromEntries(LIMIT_FIELDS.map(([field]) => [field, optionalNumber(form.elements[field].value)]));
}

function serviceChecks(services, checked) {
  if (!services.length) return h("p", { class: "note" }, "No service is published yet.");
  return h("div", { class: "checks" }, services.map((s) => h("label", { class: "check" },
    h("input", { type: "checkbox", name: "services", value: s.api_name, checked: checked.includes(s.api_name) }),
    s.api_name)));
}

async function editApp(app, services, refresh) {
  const message = messageArea();
  const limitsForm = h("form", { "data-testid": "limits-form" }, limitInputs("edit", app.limits),
    h("button", { type: "submit" }, "Save limits"));
  limitsForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      app = await put(`/apps/${encodeURIComponent(app.name)}/limits`, readLimits(limitsForm));
      message.show(`Limits: ${limitsText(app.limits)}`, "ok");
      refresh();
    } catch (e) { message.show(e.message); }
  });
  const checks = serviceChecks(services, app.services);
  checks.addEventListener("change", async (event) => {
    const box = event.target;
    const path = `/apps/${encodeURIComponent(app.name)}/services/${encodeURIComponent(box.value)}`;
    try {
      app = box.checked ? await put(path) : await del(path);
      message.show(`May call: ${app.services.join(", ") || "nothing"}`, "ok");
      refresh();
    } catch (e) {
      box.checked = !box.checked;
      message.show(e.message);
    }
  });
  await modal(`App ${app.name}`, (close) => h("div", { "data-testid": "edit-dialog" },
    h("h3", null, "Limits"), limitsForm,
    h("h3", null, "Allowed services"), checks,
    h("h3", null, "API keys"), apiKeysSection(app, message),
    h("h3", null, "Access codes"), accessCodesSection(app, message),
    message,
    h("div", { class: "buttons" }, h("button", { type: "button", onclick: () => close(true) }, "Close"))));
}

export function render(main) {
  const message = messageArea();
  const tableBox = h("div", { class: "table-box" });
  const createBox = h("section", { class: "card" });
  main.append(message, createBox, h("section", { class: "card" }, h("h2", null, "Apps"), tableBox));
  let services = [];

  function createForm() {
    const formMessage = messageArea();
    const form = h("form", { "data-testid": "create-app" },
      h("div", { class: "row" },
        h("label", { class: "field grow" }, h("span", null, "Name"),
          h("input", { name: "name", required: true, placeholder: "team-a", autocomplete: "off", id: "new-app-name" })),
        limitInputs("new", {})),
      h("div", { class: "field" }, h("span", null, "May call"), serviceChecks(services, [])),
      formMessage,
      h("button", { type: "submit", class: "primary" }, "Create app"));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      formMessage.clear();
      const body = {
        name: form.elements.name.value.trim(),
        services: [...form.querySelectorAll("input[name=services]:checked")].map((b) => b.value),
        limits: readLimits(form),
      };
      try {
        const created = await post("/apps", body);
        form.reset();
        await showKeys(created.keys, `Created app ${created.app.name}`);
        refresh();
      } catch (e) { formMessage.show(e.message); }
    });
    clear(createBox, h("h2", null, "Create an app"), form);
  }

  function row(app) {
    const name = encodeURIComponent(app.name);
    const rotate = async () => {
      if (!await confirmDialog(`Rotate the keys of ${app.name}?`, "The old keys and every access token issued "
        + "with them stop working at once.", "Rotate keys")) return;
      try {
        const rotated = await post(`/apps/${name}/rotate`);
        await showKeys(rotated.keys, `Rotated the keys of ${app.name}`);
        refresh();
      } catch (e) { message.show(e.message); }
    };
    const remove = async () => {
      if (!await confirmDialog(`Delete app ${app.name}?`, "Its keys and access tokens stop working; its usage "
        + "history is kept.", "Delete")) return;
      try {
        await del(`/apps/${name}`);
        message.show(`Deleted app ${app.name}.`, "ok");
        refresh();
      } catch (e) { message.show(e.message); }
    };
    return h("tr", { "data-app": app.name },
      h("td", null, h("strong", null, app.name), h("div", { class: "note" }, `id ${app.id}`)),
      h("td", null, h("code", null, app.api_key), h("div", { class: "note" }, `IAM ${app.access_key}`)),
      h("td", null, app.services.length ? app.services.map((s) => h("span", { class: "chip" }, s)) : "—"),
      h("td", null, limitsText(app.limits), h("div", { class: "note" },
        `this minute: ${number(app.requests_this_minute)} requests, ${number(app.tokens_this_minute)} tokens`)),
      h("td", { class: "num" }, number(app.requests_today), h("div", { class: "note" },
        `${number(app.requests_total)} in total`)),
      h("td", null, dateTime(app.created_at)),
      h("td", { class: "actions" },
        h("button", { type: "button", class: "small", onclick: () => editApp(app, services, refresh) }, "Edit"),
        h("button", { type: "button", class: "small", onclick: rotate }, "Rotate keys"),
        h("button", { type: "button", class: "small danger", onclick: remove }, "Delete")));
  }

  async function refresh() {
    try {
      const [a, s] = await Promise.all([get("/apps"), get("/services")]);
      const first = services.length === 0 && s.services.length > 0;
      services = s.services;
      if (first || !createBox.firstChild) createForm();
      clear(tableBox, a.apps.length ? h("table", { "data-testid": "apps-table" },
        h("thead", null, h("tr", null, ["App", "API Key", "Services", "Limits", "Requests today", "Created", ""]
          .map((t) => h("th", null, t)))),
        h("tbody", null, a.apps.map(row))) : h("p", { class: "note" }, "No apps yet."));
    } catch (e) { message.show(e.message); }
  }

  refresh();
  return null;
}
