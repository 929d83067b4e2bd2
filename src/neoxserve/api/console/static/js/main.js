// The console shell: login, navigation between the pages (#/overview, #/apps, ...), logout.
import { ApiError, get, post, whenSessionLost } from "./api.js";
import { clear, h, messageArea } from "./dom.js";
import * as apps from "./apps.js";
import * as overview from "./overview.js";
import * as playground from "./playground.js";
import * as services from "./services.js";
import * as usage from "./usage.js";

const PAGES = [
  ["overview", "Overview", overview],
  ["apps", "Apps", apps],
  ["services", "Services", services],
  ["usage", "Usage", usage],
  ["playground", "Playground", playground],
];

const root = document.getElementById("root");
let stopPage = null;   // the current page's cleanup (timers, streams)

function leavePage() {
  if (stopPage) stopPage();
  stopPage = null;
}

function showLogin(reason) {
  leavePage();
  root.className = "login-screen";
  const message = messageArea();
  const key = h("input", { type: "password", name: "key", id: "admin-key", autocomplete: "current-password",
                           required: true, placeholder: "nxa-…", spellcheck: "false" });
  const form = h("form", { class: "card login", "data-testid": "login-form" },
    h("h1", null, "neoxserve console"),
    h("label", { for: "admin-key" }, "Admin key"),
    key,
    h("p", { class: "hint" }, "Printed once by the first ", h("code", null, "neoxserve serve"),
      "; ", h("code", null, "neoxserve admin rotate-key"), " makes a new one."),
    message,
    h("button", { type: "submit", class: "primary" }, "Log in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    message.clear();
    try {
      await post("/login", { key: key.value });
      key.value = "";
      showShell();
    } catch (e) {
      message.show(e.message);
    }
  });
  if (reason) message.show(reason, "info");
  clear(root, form);
  key.focus();
}

function showShell() {
  root.className = "shell";
  const nav = h("nav", { class: "sidebar", "aria-label": "pages" },
    h("div", { class: "brand" }, "neoxserve"),
    PAGES.map(([id, title]) => h("a", { href: `#/${id}`, "data-page": id }, title)));
  const logout = h("button", { type: "button", class: "link", "data-testid": "logout" }, "Log out");
  logout.addEventListener("click", async () => {
    try { await post("/logout"); } catch (e) { /* already gone */ }
    location.hash = "";
    showLogin("You are logged out.");
  });
  const title = h("h1", { id: "page-title" });
  const main = h("main", { id: "page" });
  clear(root, nav, h("div", { class: "content" }, h("header", null, title, logout), main));
  route();
}

function route() {
  if (!document.getElementById("page")) return;
  const id = (location.hash.match(/^#\/(\w+)/) || [])[1] || "overview";
  const entry = PAGES.find(([pageId]) => pageId === id) || PAGES[0];
  const [pageId, pageTitle, page] = entry;
  leavePage();
  document.title = `${pageTitle} · neoxserve console`;
  document.getElementById("page-title").textContent = pageTitle;
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.page === pageId);
    if (a.dataset.page === pageId) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  const main = clear(document.getElementById("page"));
  main.dataset.page = pageId;
  stopPage = page.render(main) || null;
}

whenSessionLost((error) => showLogin(error.code === "expired" ? error.message : "Please log in."));
window.addEventListener("hashchange", route);

(async () => {
  try {
    await get("/session");
    showShell();
  } catch (e) {
    if (!(e instanceof ApiError)) throw e;
    showLogin();
  }
})();
