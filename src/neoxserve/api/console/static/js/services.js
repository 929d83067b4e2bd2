// Services: publish (sampling defaults, maximum output, allowed apps), list, unpublish.
import { del, get, post } from "./api.js";
import { clear, confirmDialog, dateTime, h, messageArea, optionalNumber } from "./dom.js";

// The sampling defaults a service may set: [field, label]. Their rules come from the platform (GET /services).
const DEFAULTS = [
  ["temperature", "Temperature"],
  ["top_p", "top_p"],
  ["top_k", "top_k"],
  ["penalty_score", "Penalty score"],
  ["max_output_tokens", "Max output tokens"],
];

function defaultsText(s) {
  const parts = DEFAULTS.slice(0, 4).filter(([f]) => s[f] !== null).map(([f, label]) => `${label} ${s[f]}`);
  return parts.length ? parts.join(" · ") : "request values, else built-in defaults";
}

export function render(main) {
  const message = messageArea();
  const createBox = h("section", { class: "card" });
  const tableBox = h("div", { class: "table-box" });
  main.append(message, createBox, h("section", { class: "card" }, h("h2", null, "Published services"), tableBox));
  let defaultMax = null;

  function publishForm(apps, rules) {
    const formMessage = messageArea();
    const form = h("form", { "data-testid": "publish-service" },
      h("div", { class: "row" },
        h("label", { class: "field" }, h("span", null, "API name"),
          h("input", { name: "api_name", required: true, placeholder: "stablelm_alpha_7b", autocomplete: "off" })),
        h("label", { class: "field grow" }, h("span", null, "Model (display name)"),
          h("input", { name: "model", required: true, placeholder: "stablelm-tuned-alpha-7b", autocomplete: "off" }))),
      h("div", { class: "row" }, DEFAULTS.map(([field, label]) => h("label", { class: "field" },
        h("span", null, label), h("span", { class: "note" }, rules[field] || ""),
        h("input", { name: field, type: "number", step: "any", placeholder: "default" })))),
      h("div", { class: "field" }, h("span", null, "Allowed apps"), apps.length
        ? h("div", { class: "checks" }, apps.map((a) => h("label", { class: "check" },
          h("input", { type: "checkbox", name: "allow", value: a.name }), a.name)))
        : h("p", { class: "note" }, "No apps yet.")),
      formMessage,
      h("button", { type: "submit", class: "primary" }, "Publish"));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      formMessage.clear();
      const body = { api_name: form.elements.api_name.value.trim(), model: form.elements.model.value,
                     allow: [...form.querySelectorAll("input[name=allow]:checked")].map((b) => b.value) };
      for (const [field] of DEFAULTS) body[field] = optionalNumber(form.elements[field].value);
      try {
        const service = await post("/services", body);
        form.reset();
        message.show(`Published ${service.api_name}.`, "ok");
        refresh();
      } catch (e) { formMessage.show(e.message); }
    });
    clear(createBox, h("h2", null, "Publish a service"), form);
  }

  function row(s) {
    const unpublish = async () => {
      if (!await confirmDialog(`Unpublish ${s.api_name}?`, "Calls to it fail with 336005 and every app loses its "
        + "permission for it (publishing the name again does not bring them back).", "Unpublish")) return;
      try {
        await del(`/services/${encodeURIComponent(s.api_name)}`);
        message.show(`Unpublished ${s.api_name}.`, "ok");
        refresh();
      } catch (e) { message.show(e.message); }
    };
    return h("tr", { "data-service": s.api_name },
      h("td", null, h("strong", null, s.api_name)),
      h("td", { "data-testid": "model" }, s.model),
      h("td", null, defaultsText(s)),
      h("td", { class: "num" }, s.max_output_tokens ?? `${defaultMax} (server default)`),
      h("td", null, s.allowed_apps.length ? s.allowed_apps.map((a) => h("span", { class: "chip" }, a)) : "—"),
      h("td", null, dateTime(s.created_at)),
      h("td", { class: "actions" }, h("button", { type: "button", class: "small danger", onclick: unpublish },
        "Unpublish")));
  }

  async function refresh() {
    try {
      const [s, a] = await Promise.all([get("/services"), get("/apps")]);
      defaultMax = s.default_max_output_tokens;
      if (!createBox.firstChild) publishForm(a.apps, s.rules);
      clear(tableBox, s.services.length ? h("table", { "data-testid": "services-table" },
        h("thead", null, h("tr", null, ["API name", "Model", "Sampling defaults", "Max output", "Allowed apps",
          "Published", ""].map((t) => h("th", null, t)))),
        h("tbody", null, s.services.map(row))) : h("p", { class: "note" }, "No services published."));
    } catch (e) { message.show(e.message); }
  }

  refresh();
  return null;
}
