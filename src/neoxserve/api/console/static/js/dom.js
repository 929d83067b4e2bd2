// Building the page from data, always as text nodes: never as markup parsed from strings.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "value" || name === "checked" || name === "selected") el[name] = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// Empty `el`, then append `children` (nested arrays flattened, null and false left out).
export function clear(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export const fmt = new Intl.NumberFormat("en-US");
export const number = (n) => (n === null || n === undefined ? "—" : fmt.format(n));

export function dateTime(unixSeconds) {
  return new Date(unixSeconds * 1000).toISOString().replace("T", " ").slice(0, 16) + " UTC";
}

// A value shown in a monospace box with a copy button.
export function copyable(value, label) {
  const field = h("input", { class: "mono", readonly: true, value, "aria-label": label, spellcheck: "false" });
  const button = h("button", { type: "button", class: "small", "aria-label": `copy ${label}` }, "Copy");
  button.addEventListener("click", async () => {
    await copyText(value, field);
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  });
  return h("div", { class: "copyable" }, field, button);
}

export async function copyText(value, field) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(value);
      return;
    } catch (e) { /* fall back below */ }
  }
  // plain http on another host: no async clipboard API, select and copy instead
  field.select();
  document.execCommand("copy");
}

// A message area (role=alert) that shows an error's text, or nothing.
export function messageArea() {
  const el = h("p", { class: "message", role: "alert", hidden: true });
  el.show = (text, kind = "error") => {
    el.textContent = text;
    el.className = `message ${kind}`;
    el.hidden = !text;
  };
  el.clear = () => el.show("");
  return el;
}

// A modal <dialog>; resolves with the value passed to close(). The dialog leaves the DOM when closed.
export function modal(title, build) {
  return new Promise((resolve) => {
    const dialog = h("dialog", { class: "modal", "aria-label": title });
    let result = null;
    const close = (value) => { result = value; dialog.close(); };
    dialog.addEventListener("close", () => { dialog.remove(); resolve(result); });
    append(dialog, [h("h2", null, title), build(close)]);
    document.body.append(dialog);
    dialog.showModal();
  });
}

export function confirmDialog(title, text, action) {
  return modal(title, (close) => h("div", null,
    h("p", null, text),
    h("div", { class: "buttons" },
      h("button", { type: "button", onclick: () => close(false) }, "Cancel"),
      h("button", { type: "button", class: "danger", "data-testid": "confirm", onclick: () => close(true) }, action))));
}

export function formValues(form) {
  return Object.fromEntries(new FormData(form).entries());
}

// "" -> null, "12" -> 12 (the platform decides what is a valid number)
export function optionalNumber(text) {
  const t = String(text ?? "").trim();
  return t === "" ? null : Number(t);
}
