// Shop operator console: orders with their saga timeline, projections, dead letters.
// Plain JavaScript over the admin API; nothing is loaded from elsewhere.
"use strict";

const state = { token: sessionStorage.getItem("shop-token"), order: null, view: "orders" };

// `#token=…&order=…&view=…` (for automation and links): taken once, then dropped.
(function readFragment() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  if (params.get("token")) {
    state.token = params.get("token");
    sessionStorage.setItem("shop-token", state.token);
  }
  if (params.get("order")) state.order = params.get("order");
  if (params.get("view")) state.view = params.get("view");
  else if (["orders", "projections", "dlq"].includes(location.hash.slice(1))) state.view = location.hash.slice(1);
  if (params.has("token")) {
    // Keep the token out of the address bar and the history.
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
  }
})();

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: Object.assign(
      { accept: "application/json" },
      state.token ? { authorization: `Bearer ${state.token}` } : {},
      body ? { "content-type": "application/json" } : {},
    ),
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await response.json().catch(() => null);
  if (response.status === 401) { signOut(); throw new Error("please sign in"); }
  if (!response.ok) {
    const error = new Error((data && (data.detail || data.title)) || `${response.status}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

function when(iso) { return iso ? new Date(iso).toLocaleString() : "–"; }
function short(id) { return id ? id.slice(0, 8) + "…" + id.slice(-4) : "–"; }
function badge(text) { return el("span", { class: `badge ${text}` }, text); }
function showError(message) { $("#error").textContent = message || ""; }

function signOut() {
  state.token = null;
  sessionStorage.removeItem("shop-token");
  render();
}

async function renderOrders() {
  const status = $("#status-filter").value;
  const orders = await api("GET", `/api/orders?limit=100${status ? `&status=${status}` : ""}`);
  const body = $("#orders tbody");
  body.replaceChildren(...orders.map((o) => el("tr", {
    class: o.order_id === state.order ? "selected" : "",
    dataset: { order: o.order_id },
    onclick: () => { state.order = o.order_id; renderOrders(); },
  }, el("td", { class: "mono", title: o.order_id }, short(o.order_id)), el("td", {}, badge(o.status)),
     el("td", { class: "num" }, o.total), el("td", {}, when(o.created_at)),
     el("td", { class: "mono", title: o.customer_id }, short(o.customer_id)))));
  if (!orders.length) body.append(el("tr", {}, el("td", { colspan: 5, class: "hint" }, "no orders yet")));
  if (state.order) await renderOrder(state.order);
}

async function renderOrder(id) {
  const detail = $("#order-detail");
  let order;
  try {
    order = await api("GET", `/api/orders/${id}`);
  } catch (e) {
    detail.replaceChildren(el("p", { class: "error" }, `order ${id}: ${e.message}`));
    return;
  }
  detail.replaceChildren(
    el("h2", {}, "Order ", el("span", { class: "mono" }, order.order_id), " ", badge(order.status)),
    el("dl", {},
      el("dt", {}, "customer"), el("dd", {}, `${order.customer_name || "?"} `, el("span", { class: "mono" }, short(order.customer_id))),
      el("dt", {}, "total"), el("dd", {}, order.total),
      el("dt", {}, "lines"), el("dd", {}, order.lines.map((l) => `${l.quantity} × ${l.name || l.sku || short(l.product_id)} @ ${l.unit_price}`).join(", ")),
      order.cancel_reason ? [el("dt", {}, "cancelled"), el("dd", { class: "error" }, order.cancel_reason)] : null,
      // A confirmed order's cancellation is a request shipping decides.
      order.cancellation ? [el("dt", {}, "cancellation"), el("dd", {
        id: "cancellation",
        class: order.cancellation.state === "requested" ? "" : (order.cancellation.state === "refused" ? "error" : ""),
      }, `${order.cancellation.state} (asked ${when(order.cancellation.requested_at)}`
        + (order.cancellation.decided_at ? `, decided ${when(order.cancellation.decided_at)})` : ", shipping deciding)")
        + (order.cancellation.state === "refused" ? " — the parcel had already left" : ""))] : null,
      el("dt", {}, "updated"), el("dd", {}, when(order.updated_at))),
    el("h2", {}, "Saga timeline"),
    el("ol", { id: "timeline" }, order.history.map((step) => el("li", {
      class: /Cancel|Rejected|Declined|Failed|Released|Refunded/.test(step.event_type) ? "cancel" : "",
      dataset: { eventType: step.event_type, source: step.source },
    }, el("span", { class: "step" }, step.event_type), el("span", { class: "source" }, step.source),
       el("div", { class: "at" }, when(step.at))))),
  );
}

// Fields of a projection the table has columns for; any other is listed in the last one.
const projectionFields = ["name", "status", "version", "events_applied", "lag", "oldest_unprocessed_age_ms",
  "last_event_at", "rebuild", "last_error", "positions"];

function plain(value) {
  return value !== null && typeof value === "object" ? JSON.stringify(value) : String(value);
}

function rebuildText(rebuild) {
  if (!rebuild) return "–";
  if (typeof rebuild !== "object") return plain(rebuild);
  const { version, events_applied: applied, lag, ...rest } = rebuild;
  const parts = [];
  if (applied !== undefined) parts.push(`${applied} applied`);
  if (lag !== undefined) parts.push(`lag ${lag}`);
  for (const [k, v] of Object.entries(rest)) if (v !== null && v !== undefined) parts.push(`${k} ${plain(v)}`);
  return `${version !== undefined ? `v${version}` : "rebuild"}${parts.length ? ": " + parts.join(", ") : ""}`;
}

function positionsText(positions) {
  return Array.isArray(positions)
    ? positions.map((p) => `${p.topic}/${p.partition}: ${p.offset ?? "–"} of ${p.end_offset ?? "?"}`).join("\n")
    : null;
}

async function renderProjections() {
  const projections = await api("GET", "/api/projections");
  $("#projections tbody").replaceChildren(...projections.map((p) => el("tr", { dataset: { projection: p.name } },
    el("td", { title: positionsText(p.positions) }, el("b", {}, p.name)), el("td", {}, badge(p.status)),
    el("td", { class: "num" }, p.version ?? "–"),
    el("td", { class: "num" }, p.events_applied ?? "–"), el("td", { class: "num" }, p.lag ?? "–"),
    el("td", { class: "num" }, p.oldest_unprocessed_age_ms == null ? "–" : `${(p.oldest_unprocessed_age_ms / 1000).toFixed(1)} s`),
    el("td", {}, when(p.last_event_at)),
    el("td", {}, rebuildText(p.rebuild)),
    el("td", { class: "error" }, p.last_error || ""),
    el("td", { class: "extra" }, Object.entries(p).filter(([k, v]) => !projectionFields.includes(k) && v !== null && v !== undefined)
      .map(([k, v]) => el("div", {}, el("span", { class: "hint" }, `${k} `), plain(v)))),
    el("td", {}, el("button", {
      disabled: p.rebuild ? "" : null,
      onclick: async (e) => {
        e.stopPropagation();
        try { await api("POST", `/api/projections/${p.name}/rebuild`); } catch (err) { showError(err.message); }
        renderProjections();
      },
    }, "Rebuild")))));
}

async function renderDlq() {
  const body = $("#dlq tbody");
  let letters;
  try {
    letters = await api("GET", "/api/dlq");
  } catch (e) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 9, class: "hint" }, e.status === 404 ? "no dead-letter endpoint" : e.message)));
    return;
  }
  body.replaceChildren(...letters.map((d) => el("tr", { dataset: { deadLetter: d.id } },
    el("td", { class: "mono" }, d.id), el("td", {}, d.consumer), el("td", {}, d.event_type || "?"),
    el("td", { class: "mono" }, `${d.topic}/${d.partition}@${d.offset}`), el("td", { class: "error" }, d.error),
    el("td", { class: "num" }, d.attempts), el("td", {}, when(d.created_at)), el("td", {}, when(d.retried_at)),
    el("td", {}, el("button", {
      onclick: async () => {
        try { await api("POST", `/api/dlq/${d.id}/retry`); } catch (err) { showError(err.message); }
        renderDlq();
      },
    }, "Retry")))));
  if (!letters.length) body.append(el("tr", {}, el("td", { colspan: 9, class: "hint" }, "no dead letters")));
}

const views = { orders: renderOrders, projections: renderProjections, dlq: renderDlq };

async function render() {
  showError("");
  const signedIn = Boolean(state.token);
  $("#login").hidden = signedIn;
  $("#logout").hidden = !signedIn;
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === state.view));
  document.querySelectorAll(".view").forEach((v) => { v.hidden = !signedIn || v.id !== `view-${state.view}`; });
  if (!signedIn) return;
  try {
    await views[state.view]();
  } catch (e) {
    showError(e.message);
  }
}

document.querySelectorAll("nav a").forEach((a) => a.addEventListener("click", (e) => {
  e.preventDefault();
  state.view = a.dataset.view;
  render();
}));
$("#status-filter").addEventListener("change", renderOrders);
$("#logout").addEventListener("click", signOut);
$("#login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = new FormData(e.target);
  try {
    const answer = await api("POST", "/api/auth/token", { email: form.get("email"), password: form.get("password") });
    state.token = answer.access_token;
    sessionStorage.setItem("shop-token", state.token);
    render();
  } catch (err) {
    $("#login-error").textContent = err.message;
  }
});

render();
setInterval(() => { if (state.token && state.view !== "orders") render(); }, 3000);
