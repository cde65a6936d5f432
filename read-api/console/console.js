// Shop operator console: find by id, orders (live, paged) with their saga timeline, an
// event browser over every service's store, projections with throughput and lag over
// time, dead letters with their payload. Plain JavaScript over the admin API; nothing is
// loaded from elsewhere. Where you are lives in the address (`#view=…&…`), so every
// page can be linked, bookmarked and reloaded.
"use strict";

const CONTEXTS = ["orders", "inventory", "payments", "shipping", "customers"];
const POLL_MS = 2000;
const SAMPLES = 90;

const state = {
  token: sessionStorage.getItem("shop-token"),
  route: { view: "orders", trail: [] },
  samples: [], // polls of /api/projections: { t, projections }
  events: null, // the event browser's list: { key, context, aggregate, list, next }
  openEvents: new Set(),
  openLetters: new Set(),
  busy: false,
};

// ---- the address -----------------------------------------------------------------

function parseRoute(hash) {
  const text = hash.replace(/^#/, "");
  if (["orders", "projections", "dlq", "events"].includes(text)) return { view: text, trail: [] };
  const p = new URLSearchParams(text);
  return {
    view: p.get("view") || (p.get("order") ? "orders" : p.get("q") ? "search" : "orders"),
    order: p.get("order") || null,
    q: p.get("q") || "",
    status: p.get("status") || "",
    limit: Number(p.get("limit")) || null,
    trail: (p.get("trail") || "").split(",").filter(Boolean),
    context: p.get("context") || "",
    aggregate: p.get("aggregate") || "",
    after: p.get("after") || "",
  };
}

function link(route) {
  const p = new URLSearchParams();
  p.set("view", route.view);
  for (const key of ["order", "q", "status", "limit", "context", "aggregate", "after"]) {
    if (route[key]) p.set(key, route[key]);
  }
  if (route.trail && route.trail.length) p.set("trail", route.trail.join(","));
  return `#${p.toString()}`;
}

function go(route) { location.hash = link(route); }

// `#token=…` (for automation and links) is taken once, then dropped from the address.
(function readFragment() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  if (params.get("token")) {
    state.token = params.get("token");
    sessionStorage.setItem("shop-token", state.token);
  }
  if (params.has("token")) {
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
  }
  state.route = parseRoute(location.hash);
})();

// ---- helpers ---------------------------------------------------------------------

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined && child !== false) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// The SVG namespace (a name, never fetched).
const SVG = ["http:", "", "www.w3.org", "2000", "svg"].join("/");
function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) node.setAttribute(k, v);
  for (const child of children.flat()) if (child) node.append(child instanceof Node ? child : String(child));
  return node;
}

async function request(method, path, body) {
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
  // The API's own words (problem+json `detail`), whatever the status.
  const message = (data && (data.detail || data.title)) || `${response.status} ${response.statusText}`;
  if (response.status === 401 && state.token && !path.startsWith("/api/auth/")) {
    signOut(`Signed out: ${message}`);
    const error = new Error(message);
    error.status = 401;
    throw error;
  }
  if (!response.ok) {
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return { data, headers: response.headers };
}

async function api(method, path, body) { return (await request(method, path, body)).data; }

function when(iso) { return iso ? new Date(iso).toLocaleString() : "–"; }
function whenShort(iso) { return iso ? new Date(iso).toLocaleString([], { dateStyle: "short", timeStyle: "medium" }) : "–"; }
function clock(date) { return date.toLocaleTimeString(); }
function badge(text) { return el("span", { class: `badge ${text}` }, text); }
function showError(message) { $("#error").textContent = message || ""; }
function notice(message) { $("#notice").textContent = message || ""; }
function pretty(value) { return typeof value === "string" ? value : JSON.stringify(value, null, 2); }
function isId(text) { return /^[A-Za-z0-9_-]{1,128}$/.test(text); }
function isUuid(text) { return /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(text); }

function copy(text) {
  const done = () => notice(`copied ${text}`);
  if (navigator.clipboard && navigator.clipboard.writeText) navigator.clipboard.writeText(text).then(done, () => notice(text));
  else notice(text);
}

// A whole id in monospace; the part that tells UUIDv7s apart (their end) stands out.
// `short` shows only that end (the whole id stays in the title and is what is copied).
function idText(id, { link: href, short } = {}) {
  if (!id) return el("span", { class: "hint" }, "–");
  const tail = id.length > 12 ? id.slice(-12) : id;
  const head = short && tail !== id ? "…" : id.slice(0, id.length - tail.length);
  const text = el(href ? "a" : "span", { class: "id mono", title: id, "data-id": id, href },
    el("span", { class: "id-head" }, head), el("b", { class: "id-tail" }, tail));
  return el("span", { class: "id-wrap" }, text, el("button", {
    class: "copy", type: "button", title: "copy the id", "aria-label": `copy ${id}`,
    onclick: (e) => { e.stopPropagation(); e.preventDefault(); copy(id); },
  }, "copy"));
}

// An in-page confirmation (not `window.confirm`): resolves to whether the operator agreed.
function confirmAction(title, text, action) {
  const dialog = $("#confirm");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  $("#confirm-ok").textContent = action;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    $("#confirm-cancel").focus();
  });
}

function signOut(message) {
  state.token = null;
  sessionStorage.removeItem("shop-token");
  render();
  if (message) $("#login-error").textContent = message;
}

// ---- orders ----------------------------------------------------------------------

function pageSize() { return state.route.limit || 100; }

async function renderOrders() {
  const route = state.route;
  const limit = pageSize();
  $("#status-filter").value = route.status || "";
  const size = $("#page-size");
  if (![...size.options].some((o) => Number(o.value) === limit)) size.append(el("option", {}, String(limit)));
  size.value = String(limit);
  const query = new URLSearchParams({ limit: String(limit) });
  const after = route.trail[route.trail.length - 1];
  if (after) query.set("after", after);
  if (route.status) query.set("status", route.status);
  const orders = await api("GET", `/api/orders?${query}`);
  const body = $("#orders tbody");
  body.replaceChildren(...orders.map((o) => el("tr", {
    class: o.order_id === route.order ? "selected" : "",
    dataset: { order: o.order_id },
    onclick: () => go({ ...route, view: "orders", order: o.order_id }),
  }, el("td", {}, idText(o.order_id)), el("td", {}, badge(o.status)),
     el("td", { class: "num" }, o.total), el("td", { class: "nowrap", title: o.created_at }, whenShort(o.created_at)),
     el("td", {}, idText(o.customer_id, { short: true, link: link({ view: "search", q: o.customer_id }) })))));
  if (!orders.length) body.append(el("tr", {}, el("td", { colspan: 5, class: "hint" }, route.trail.length ? "no more orders" : "no orders yet")));
  const prev = $("#prev");
  prev.hidden = !route.trail.length;
  prev.href = link({ ...route, order: null, trail: route.trail.slice(0, -1) });
  const next = $("#next");
  next.hidden = orders.length < limit;
  if (orders.length) next.href = link({ ...route, order: null, trail: [...route.trail, orders[orders.length - 1].order_id] });
  const first = route.trail.length * limit;
  $("#page-number").textContent = `page ${route.trail.length + 1}` + (orders.length ? ` · ${orders.length} order${orders.length === 1 ? "" : "s"}` : "");
  $("#page-number").dataset.page = String(route.trail.length + 1);
  $("#page-number").title = route.trail.length ? `orders after ${after} (about ${first} before)` : "the newest orders";
  const table = $("#orders");
  table.dataset.refreshes = String(Number(table.dataset.refreshes || 0) + 1);
  $("#refreshed").textContent = `updated ${clock(new Date())}`;
  if (route.order) await renderOrder(route.order, $("#order-detail"));
  else $("#order-detail").replaceChildren(el("p", { class: "hint" }, "Pick an order to see its saga, step by step, across services."));
}

// Where an order's events are: each service keeps them under its own aggregate.
function orderStreams(order) {
  return [
    ["orders", order.order_id, "the order"],
    ["inventory", order.order_id, "its stock reservation"],
    ["payments", order.customer_id, "the customer's wallet"],
    ["shipping", order.order_id, "its shipment"],
    ["customers", order.customer_id, "the customer"],
  ];
}

async function renderOrder(id, container) {
  let order;
  try {
    order = await api("GET", `/api/orders/${encodeURIComponent(id)}`);
  } catch (e) {
    container.replaceChildren(el("p", { class: "error" }, `order ${id}: ${e.message}`));
    return;
  }
  const c = order.cancellation;
  container.replaceChildren(el("div", { class: "order", dataset: { order: order.order_id } },
    el("h2", {}, "Order ", idText(order.order_id), " ", badge(order.status)),
    el("dl", {},
      el("dt", {}, "customer"), el("dd", {}, `${order.customer_name || "?"} `, idText(order.customer_id, { link: link({ view: "search", q: order.customer_id }) })),
      el("dt", {}, "total"), el("dd", {}, order.total),
      el("dt", {}, "lines"), el("dd", {}, order.lines.map((l) => el("div", {},
        `${l.quantity} × ${l.name || l.sku || "?"} @ ${l.unit_price} `,
        el("a", { href: link({ view: "events", context: "inventory", aggregate: l.product_id }), title: l.product_id, class: "hint" }, "product events")))),
      order.cancel_reason ? [el("dt", {}, "cancelled"), el("dd", { class: "error" }, order.cancel_reason)] : null,
      // A confirmed order's cancellation is a request shipping decides.
      c ? [el("dt", {}, "cancellation"), el("dd", {
        id: "cancellation",
        class: c.state === "refused" ? "error" : "",
        dataset: { state: c.state },
      }, badge(c.state), ` asked ${when(c.requested_at)}`
        + (c.decided_at ? `, decided ${when(c.decided_at)}` : ", shipping deciding")
        + (c.state === "refused" ? " — the parcel had already left" : "")
        + (c.state === "accepted" ? " — shipment cancelled, order cancelled" : ""))] : null,
      el("dt", {}, "placed"), el("dd", {}, when(order.created_at)),
      el("dt", {}, "updated"), el("dd", {}, when(order.updated_at))),
    el("h2", {}, "Events by service"),
    el("ul", { id: "order-streams", class: "streams" }, orderStreams(order).map(([context, aggregate, what]) => el("li", {},
      el("a", { class: "event-link", dataset: { context }, href: link({ view: "events", context, aggregate }) }, context),
      el("span", { class: "hint" }, ` ${what}`)))),
    el("h2", {}, "Saga timeline"),
    el("ol", { id: "timeline" }, order.history.map((step) => el("li", {
      class: /Cancel|Rejected|Declined|Failed|Released|Refunded|Refused/.test(step.event_type) ? "cancel" : "",
      dataset: { eventType: step.event_type, source: step.source },
    }, el("span", { class: "step" }, step.event_type),
       el("a", { class: "source", href: link({ view: "events", context: step.source, aggregate: step.source === "payments" || step.source === "customers" ? order.customer_id : order.order_id }) }, step.source),
       el("div", { class: "at" }, when(step.at)))))));
}

// ---- search ----------------------------------------------------------------------

async function renderSearch() {
  const q = (state.route.q || "").trim();
  $("#search-query").textContent = q;
  $("#search input").value = q;
  const matches = $("#search-matches");
  const detail = $("#search-detail");
  detail.replaceChildren();
  if (!isId(q)) {
    matches.replaceChildren(el("li", { class: "hint" }, "Type an order, customer or aggregate id (letters, digits, - or _)."));
    return;
  }
  matches.replaceChildren(el("li", { class: "hint" }, "searching…"));
  const none = () => null;
  const [order, customer, ...streams] = await Promise.all([
    isUuid(q) ? api("GET", `/api/orders/${q}`).catch(none) : null,
    isUuid(q) ? api("GET", `/api/customers/${q}`).catch(none) : null,
    ...CONTEXTS.map((context) => api("GET", `/api/events?context=${context}&aggregate_id=${encodeURIComponent(q)}&limit=500`).catch(none)),
  ]);
  const found = [];
  if (order) {
    found.push(el("li", { class: "match", dataset: { kind: "order" } }, "Order ",
      el("a", { href: link({ view: "orders", order: q }) }, el("span", { class: "mono" }, q)), " ", badge(order.status),
      el("span", { class: "hint" }, ` of ${order.customer_name || order.customer_id}, total ${order.total}`)));
  }
  if (customer) {
    found.push(el("li", { class: "match", dataset: { kind: "customer" } }, "Customer ", el("b", {}, customer.name),
      el("span", { class: "hint" }, ` ${customer.email}, ${customer.orders_count} orders`)));
  }
  CONTEXTS.forEach((context, i) => {
    const list = streams[i];
    if (!list || !list.length) return;
    const last = list[list.length - 1];
    found.push(el("li", { class: "match", dataset: { kind: "events", context } },
      el("a", { href: link({ view: "events", context, aggregate: q }) }, `${list.length}${list.length === 500 ? "+" : ""} ${context} event${list.length === 1 ? "" : "s"}`),
      el("span", { class: "hint" }, ` last ${shortType(last.type)} at ${when(last.time)}`)));
  });
  if (!found.length) {
    matches.replaceChildren(el("li", { class: "hint", id: "no-match" }, "Nothing has this id: no order, no customer, and no service has events of such an aggregate."));
    return;
  }
  matches.replaceChildren(...found);
  if (order) await renderOrder(q, detail);
  else if (customer) await renderCustomer(customer, detail);
  else {
    const i = streams.findIndex((s) => s && s.length);
    detail.append(el("h2", {}, `${CONTEXTS[i]} events`), eventList(streams[i], { aggregate: q }));
  }
}

async function renderCustomer(c, container) {
  const orders = await api("GET", `/api/customers/${c.customer_id}/orders?limit=100`).catch(() => []);
  const address = c.address ? [c.address.line1, c.address.postal_code, c.address.city, c.address.country].filter(Boolean).join(", ") : "–";
  container.replaceChildren(el("div", { class: "panel customer", dataset: { customer: c.customer_id } },
    el("h2", {}, "Customer ", c.name),
    el("dl", {},
      el("dt", {}, "id"), el("dd", {}, idText(c.customer_id)),
      el("dt", {}, "email"), el("dd", {}, c.email),
      el("dt", {}, "address"), el("dd", {}, address),
      el("dt", {}, "wallet"), el("dd", {}, c.wallet_balance),
      el("dt", {}, "spent"), el("dd", {}, c.lifetime_spend),
      el("dt", {}, "orders"), el("dd", {}, c.orders_count),
      el("dt", {}, "since"), el("dd", {}, when(c.created_at)),
      el("dt", {}, "events"), el("dd", {},
        el("a", { href: link({ view: "events", context: "customers", aggregate: c.customer_id }) }, "customers"), " · ",
        el("a", { href: link({ view: "events", context: "payments", aggregate: c.customer_id }) }, "payments (wallet)"))),
    el("table", { id: "customer-orders" }, el("thead", {}, el("tr", {}, el("th", {}, "order"), el("th", {}, "status"), el("th", {}, "total"), el("th", {}, "placed"))),
      el("tbody", {}, orders.map((o) => el("tr", { dataset: { order: o.order_id }, onclick: () => go({ view: "orders", order: o.order_id, trail: [] }) },
        el("td", {}, idText(o.order_id)), el("td", {}, badge(o.status)), el("td", { class: "num" }, o.total), el("td", {}, when(o.created_at))))))));
}

// ---- the event browser -----------------------------------------------------------

function shortType(type) { return (type || "?").split(".").pop(); }

function eventList(events, { aggregate, open } = {}) {
  const attrs = (e) => Object.entries(e).filter(([k]) => k !== "data");
  const linked = (k, v) => (["subject", "correlationid", "causationid"].includes(k) && isId(String(v))
    ? el("a", { class: "mono", href: link({ view: "search", q: String(v) }), title: "find this id" }, String(v))
    : el("span", { class: "mono" }, String(v)));
  return el("div", { class: "event-list" }, events.map((e, i) => el("details", {
    class: `event${e.isNew ? " new" : ""}`,
    open: open === true || state.openEvents.has(e.id) || (open === undefined && aggregate && events.length <= 8) || null,
    dataset: { sequence: e.sequence, type: e.type, id: e.id },
    ontoggle: (ev) => { if (ev.target.open) state.openEvents.add(e.id); else state.openEvents.delete(e.id); },
  }, el("summary", {},
    el("span", { class: "seq" }, aggregate ? `#${e.sequence}` : `${i + 1}.`),
    el("span", { class: "etype" }, shortType(e.type)),
    aggregate ? null : el("a", { class: "mono subject", href: link({ view: "events", context: state.route.context || "orders", aggregate: e.subject }), onclick: (ev) => ev.stopPropagation() }, e.subject, ` #${e.sequence}`),
    el("span", { class: "at" }, when(e.time))),
  el("div", { class: "event-body" },
    el("dl", { class: "attributes" }, attrs(e).filter(([k]) => k !== "isNew").map(([k, v]) => [el("dt", {}, k), el("dd", {}, linked(k, v))])),
    el("pre", { class: "data" }, pretty(e.data))))));
}

function eventsQuery(ev, after) {
  const q = new URLSearchParams({ context: ev.context, limit: "100" });
  if (ev.aggregate) q.set("aggregate_id", ev.aggregate);
  if (after) q.set("after", after);
  return `/api/events?${q}`;
}

function nextCursor(headers) {
  const match = /[?&]after=([0-9a-f-]+)[^>]*>;\s*rel="next"/.exec(headers.get("link") || "");
  return match ? match[1] : null;
}

async function renderEvents() {
  const route = state.route;
  const form = $("#events-form");
  const context = CONTEXTS.includes(route.context) ? route.context : "orders";
  form.context.value = context;
  form.aggregate.value = route.aggregate || "";
  const key = `${context}|${route.aggregate}|${route.after}`;
  if (!state.events || state.events.key !== key) {
    state.events = { key, context, aggregate: route.aggregate, list: [], next: null, missing: false };
    state.openEvents.clear();
    try {
      const { data, headers } = await request("GET", eventsQuery(state.events, route.after));
      state.events.list = data;
      state.events.next = nextCursor(headers);
    } catch (e) {
      if (e.status !== 404) throw e;
      state.events.missing = e.message;
    }
  }
  drawEvents();
}

function drawEvents() {
  const ev = state.events;
  const box = $("#events");
  if (ev.missing && !ev.list.length) {
    box.replaceChildren(el("p", { class: "hint", id: "no-events" }, ev.missing));
  } else if (!ev.list.length) {
    box.replaceChildren(el("p", { class: "hint", id: "no-events" }, `no ${ev.context} events yet`));
  } else {
    box.replaceChildren(
      ev.aggregate ? el("h2", {}, `${ev.context} · aggregate `, idText(ev.aggregate)) : el("h2", {}, `${ev.context} · the whole store, in store order`),
      eventList(ev.list, { aggregate: ev.aggregate }));
  }
  const more = $("#events-more");
  more.hidden = !ev.next;
  if (ev.next) more.href = link({ view: "events", context: ev.context, aggregate: ev.aggregate, after: ev.next });
  const follow = $("#follow").checked;
  $("#events-state").textContent = `${ev.list.length} event${ev.list.length === 1 ? "" : "s"}`
    + (follow ? ` · following, checked ${clock(new Date())}` : "");
}

// Following: what was appended since the last event shown.
async function followEvents() {
  const ev = state.events;
  if (!ev) return;
  const last = ev.list[ev.list.length - 1];
  let fresh = [];
  try {
    const { data } = await request("GET", eventsQuery(ev, last ? last.id : ""));
    fresh = data;
  } catch (e) {
    if (e.status !== 404) throw e;
  }
  if (state.events !== ev) return;
  const known = new Set(ev.list.map((e) => e.id));
  fresh = fresh.filter((e) => !known.has(e.id));
  ev.list.forEach((e) => { delete e.isNew; });
  fresh.forEach((e) => { e.isNew = true; });
  ev.list.push(...fresh);
  if (fresh.length) ev.missing = false;
  drawEvents();
}

// ---- projections -----------------------------------------------------------------

const projectionFields = ["name", "status", "version", "events_applied", "lag", "oldest_unprocessed_age_ms",
  "last_event_at", "rebuild", "last_error", "positions"];
const PALETTE = ["#2a6fdb", "#2f9e44", "#d08700", "#c92a2a", "#7048e8", "#0c8599", "#e64980", "#5c940d"];

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

async function sampleProjections() {
  const projections = await api("GET", "/api/projections");
  state.samples.push({ t: Date.now(), projections });
  if (state.samples.length > SAMPLES) state.samples.shift();
  return projections;
}

// Per projection: events applied per second between polls, and the lag at each poll.
// A rebuild in progress is a series of its own (`orders v2`), from its own figures.
function sampleRows(sample) {
  return sample.projections.flatMap((p) => [p].concat(p.rebuild && typeof p.rebuild === "object" && p.rebuild.version !== undefined
    ? [{ name: `${p.name} v${p.rebuild.version}`, events_applied: p.rebuild.events_applied, lag: p.rebuild.lag }] : []));
}

function series() {
  const samples = state.samples.map((s) => ({ t: s.t, projections: sampleRows(s) }));
  const names = [...new Set(samples.flatMap((s) => s.projections.map((p) => p.name)))].sort();
  const rate = {};
  const lag = {};
  for (const name of names) {
    rate[name] = [];
    lag[name] = [];
    samples.forEach((s, i) => {
      const p = s.projections.find((x) => x.name === name);
      if (!p) return;
      lag[name].push([s.t, Number(p.lag) || 0]);
      const before = i > 0 && samples[i - 1].projections.find((x) => x.name === name);
      if (before && before.events_applied != null && p.events_applied != null) {
        const seconds = (s.t - samples[i - 1].t) / 1000;
        // A rebuild starts its count again: no negative throughput.
        rate[name].push([s.t, seconds > 0 ? Math.max(0, p.events_applied - before.events_applied) / seconds : 0]);
      }
    });
  }
  const times = samples.map((s) => s.t);
  return { names, rate, lag, span: [Math.min(...times), Math.max(...times)] };
}

function chart(container, data, names, unit, [t0, t1]) {
  const W = 560, H = 170, L = 44, R = 10, T = 10, B = 22;
  const points = names.flatMap((n) => data[n]);
  const pointCount = Math.max(0, ...names.map((n) => data[n].length));
  container.dataset.points = String(pointCount);
  if (pointCount < 2) {
    container.replaceChildren(el("p", { class: "hint" }, "collecting… (a point every 2 s while the console is open)"));
    return;
  }
  const top = Math.max(1, ...points.map((p) => p[1]));
  const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - v / top) * (H - T - B);
  const fmt = (v) => (v >= 100 ? Math.round(v) : Math.round(v * 10) / 10);
  const grid = [0, 0.5, 1].map((f) => [
    svg("line", { x1: L, x2: W - R, y1: y(top * f), y2: y(top * f), class: "grid" }),
    svg("text", { x: L - 6, y: y(top * f) + 4, class: "tick", "text-anchor": "end" }, String(fmt(top * f))),
  ]);
  const lines = names.map((n, i) => (data[n].length ? svg("polyline", {
    points: data[n].map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
    stroke: PALETTE[i % PALETTE.length], class: "series", "data-series": n,
  }, svg("title", {}, `${n}: ${fmt(data[n][data[n].length - 1][1])} ${unit} now`)) : null));
  // The latest point of each series (a series of one point has no line yet).
  const dots = names.map((n, i) => {
    const last = data[n][data[n].length - 1];
    return last ? svg("circle", { cx: x(last[0]).toFixed(1), cy: y(last[1]).toFixed(1), r: 3, fill: PALETTE[i % PALETTE.length] }) : null;
  });
  const span = Math.round((t1 - t0) / 1000);
  container.replaceChildren(
    svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": unit },
      grid.flat(), lines.filter(Boolean), dots.filter(Boolean),
      svg("text", { x: L, y: H - 6, class: "tick" }, `${span} s ago`),
      svg("text", { x: W - R, y: H - 6, class: "tick", "text-anchor": "end" }, "now")),
    el("div", { class: "legend" }, names.map((n, i) => el("span", {},
      el("i", { class: `swatch c${i % PALETTE.length}` }), `${n} ${fmt(data[n].length ? data[n][data[n].length - 1][1] : 0)}`))));
}

function drawCharts() {
  const { names, rate, lag, span } = series();
  chart($("#throughput-chart"), rate, names, "events/s", span);
  chart($("#lag-chart"), lag, names, "events", span);
}

async function renderProjections(sampled) {
  const projections = sampled || await sampleProjections();
  drawCharts();
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
      class: "rebuild",
      disabled: Boolean(p.rebuild),
      onclick: async (e) => {
        e.stopPropagation();
        const agreed = await confirmAction(`Rebuild projection ${p.name}?`,
          `Every event is applied again into a new version of ${p.name}'s tables; reads stay on version ${p.version ?? "?"} until the new one has caught up, then switch.`,
          "Rebuild");
        if (!agreed) { notice(`rebuild of ${p.name} not started`); return; }
        try {
          const answer = await api("POST", `/api/projections/${encodeURIComponent(p.name)}/rebuild`);
          notice(`rebuild of ${p.name} started: version ${answer.version} ${answer.status}`);
        } catch (err) { showError(err.message); }
        renderProjections();
      },
    }, "Rebuild")))));
}

// ---- dead letters ----------------------------------------------------------------

async function renderDlq() {
  const body = $("#dlq tbody");
  let letters;
  try {
    letters = await api("GET", "/api/dlq");
  } catch (e) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 9, class: "hint" }, e.status === 404 ? "no dead-letter endpoint" : e.message)));
    return;
  }
  const rows = letters.flatMap((d) => {
    const open = state.openLetters.has(d.id);
    const toggle = () => {
      if (state.openLetters.has(d.id)) state.openLetters.delete(d.id); else state.openLetters.add(d.id);
      renderDlq();
    };
    const main = el("tr", { class: `letter${open ? " selected" : ""}`, dataset: { deadLetter: d.id }, onclick: toggle, title: "show the payload" },
      el("td", { class: "mono nowrap" }, open ? "▾ " : "▸ ", d.id), el("td", {}, d.consumer), el("td", {}, shortType(d.event_type)),
      el("td", { class: "mono" }, `${d.topic}/${d.partition}@${d.offset}`), el("td", { class: "error clip" }, d.error),
      el("td", { class: "num" }, d.attempts), el("td", {}, when(d.created_at)), el("td", {}, d.retried_at ? when(d.retried_at) : "–"),
      el("td", {}, el("button", {
        class: "retry",
        onclick: async (e) => {
          e.stopPropagation();
          const agreed = await confirmAction(`Re-drive dead letter ${d.id}?`,
            `${shortType(d.event_type)} goes back to ${d.topic} with its id: ${d.consumer} applies it again, consumers that already applied it skip it. Do it once the cause (${d.error}) is fixed.`,
            "Re-drive");
          if (!agreed) { notice(`dead letter ${d.id} not re-driven`); return; }
          try {
            const answer = await api("POST", `/api/dlq/${encodeURIComponent(d.id)}/retry`);
            notice(`dead letter ${d.id} re-driven to ${answer.topic}`);
          } catch (err) { showError(err.message); }
          renderDlq();
        },
      }, d.retried_at ? "Retry again" : "Retry")));
    if (!open) return [main];
    const detail = el("tr", { class: "letter-detail", dataset: { detailFor: d.id } }, el("td", { colspan: 9 },
      el("div", { class: "letter-grid" },
        el("div", {}, el("h3", {}, "Error"), el("pre", { class: "error-text" }, d.error || "–"),
          el("h3", {}, "Event"), el("dl", {},
            el("dt", {}, "id"), el("dd", { class: "mono" }, d.event_id || "–"),
            el("dt", {}, "type"), el("dd", { class: "mono" }, d.event_type || "–"),
            el("dt", {}, "key"), el("dd", {}, d.key ? el("a", { class: "mono", href: link({ view: "search", q: d.key }) }, d.key) : "–"),
            Object.entries(d.headers || {}).filter(([k]) => !["ce_id", "ce_type"].includes(k)).map(([k, v]) => [el("dt", {}, k), el("dd", { class: "mono" }, v)]))),
        el("div", {}, el("h3", {}, "Payload"), el("pre", { class: "payload" }, d.payload == null ? "(empty)" : pretty(d.payload))))));
    return [main, detail];
  });
  body.replaceChildren(...rows);
  if (!letters.length) body.append(el("tr", {}, el("td", { colspan: 9, class: "hint" }, "no dead letters")));
}

// ---- the frame -------------------------------------------------------------------

const views = { orders: renderOrders, search: renderSearch, events: renderEvents, projections: renderProjections, dlq: renderDlq };

async function render() {
  showError("");
  const signedIn = Boolean(state.token);
  const view = views[state.route.view] ? state.route.view : "orders";
  $("#login").hidden = signedIn;
  $("#logout").hidden = !signedIn;
  $("#search").hidden = !signedIn;
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === view));
  document.querySelectorAll(".view").forEach((v) => { v.hidden = !signedIn || v.id !== `view-${view}`; });
  document.body.dataset.view = view;
  if (!signedIn) return;
  try {
    await views[view]();
  } catch (e) {
    showError(e.message);
  }
}

window.addEventListener("hashchange", () => {
  state.route = parseRoute(location.hash);
  notice("");
  render();
});
$("#status-filter").addEventListener("change", (e) => go({ ...state.route, view: "orders", status: e.target.value, trail: [], order: null }));
$("#page-size").addEventListener("change", (e) => go({ ...state.route, view: "orders", limit: Number(e.target.value), trail: [], order: null }));
$("#live").addEventListener("change", (e) => {
  const badgeNode = $("#live-state");
  badgeNode.textContent = e.target.checked ? "live" : "paused";
  badgeNode.className = `badge ${e.target.checked ? "live" : "paused"}`;
  if (e.target.checked && state.route.view === "orders") render();
});
$("#follow").addEventListener("change", () => { if (state.events) drawEvents(); });
$("#search").addEventListener("submit", (e) => {
  e.preventDefault();
  const q = e.target.q.value.trim();
  if (q) go({ view: "search", q });
});
$("#events-form").addEventListener("submit", (e) => {
  e.preventDefault();
  go({ view: "events", context: e.target.context.value, aggregate: e.target.aggregate.value.trim() });
});
$("#logout").addEventListener("click", () => signOut());
$("#login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = new FormData(e.target);
  $("#login-error").textContent = "";
  try {
    const answer = await api("POST", "/api/auth/token", { email: form.get("email"), password: form.get("password") });
    state.token = answer.access_token;
    sessionStorage.setItem("shop-token", state.token);
    e.target.password.value = "";
    render();
  } catch (err) {
    // The API's own message (e.g. a wrong password, or too many attempts).
    $("#login-error").textContent = err.message;
  }
});

// One clock: projections are sampled all the time (the charts need a history), the open
// view refreshes when it is live.
async function tick() {
  if (!state.token || state.busy || document.hidden) return;
  state.busy = true;
  try {
    const view = state.route.view;
    const sampled = await sampleProjections();
    if (view === "projections") await renderProjections(sampled);
    else if (view === "orders" && $("#live").checked) await renderOrders();
    else if (view === "events" && $("#follow").checked) await followEvents();
    else if (view === "dlq") await renderDlq();
  } catch (e) {
    showError(e.message);
  } finally {
    state.busy = false;
  }
}

render();
setInterval(tick, POLL_MS);
