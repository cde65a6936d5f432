// Shop operator console, webhooks: the registered endpoints (status, URL, event types,
// why one was disabled) and an endpoint's delivery log — each delivery's attempts with
// their outcome, status code, latency, error and next retry — with a redeliver action.
// Loaded after console.js, whose helpers (el, api, badge, idText, confirmAction, …) it uses.
"use strict";

function webhookEndpoint() {
  return new URLSearchParams(location.hash.replace(/^#/, "")).get("endpoint");
}

function attemptRow(a) {
  return el("tr", {},
    el("td", { class: "num" }, a.attempt), el("td", { class: "nowrap" }, whenShort(a.at)),
    el("td", {}, badge(a.outcome)), el("td", { class: "num" }, a.status_code == null ? "–" : a.status_code),
    el("td", { class: "num" }, `${a.latency_ms} ms`), el("td", { class: "error clip", title: a.error || "" }, a.error || ""),
    el("td", { class: "nowrap" }, a.next_attempt_at ? whenShort(a.next_attempt_at) : "–"));
}

function deliveryBlock(endpoint, d) {
  const redeliver = async () => {
    const agreed = await confirmAction(`Redeliver ${d.webhook_id}?`,
      `${shortType(d.event_type)} is sent again to this endpoint under the same webhook-id, with a fresh budget of attempts.`,
      "Redeliver");
    if (!agreed) { notice(`${d.webhook_id} not redelivered`); return; }
    try {
      await api("POST", `/api/webhooks/${encodeURIComponent(endpoint)}/deliveries/${encodeURIComponent(d.delivery_id)}/redeliver`);
      notice(`${d.webhook_id} will be redelivered`);
    } catch (err) { showError(err.message); }
    renderWebhooks();
  };
  return el("div", { class: "delivery", dataset: { delivery: d.delivery_id } },
    el("div", { class: "delivery-head" }, badge(d.status), el("span", { class: "mono" }, d.webhook_id),
      el("span", {}, shortType(d.event_type)),
      el("span", { class: "hint" }, `${d.attempts} attempt${d.attempts === 1 ? "" : "s"}`),
      d.next_attempt_at ? el("span", { class: "hint" }, `next ${whenShort(d.next_attempt_at)}`) : null,
      el("a", { href: link({ view: "events", context: "notifications", aggregate: d.delivery_id }) }, "events"),
      el("button", { class: "redeliver", type: "button", onclick: redeliver }, "Redeliver")),
    d.attempt_log.length ? el("table", { class: "attempts" },
      el("thead", {}, el("tr", {}, ["#", "at", "outcome", "status", "latency", "error", "next attempt"].map((h) => el("th", {}, h)))),
      el("tbody", {}, d.attempt_log.map(attemptRow))) : el("p", { class: "hint" }, "not attempted yet"));
}

// Pause an active endpoint (its deliveries wait), resume a paused or disabled one.
function endpointActions(endpoint) {
  if (!endpoint) return el("p", { class: "hint" }, "no such endpoint");
  const act = (action) => async () => {
    try {
      const answer = await api("POST", `/api/webhooks/${encodeURIComponent(endpoint.endpoint_id)}/${action}`);
      notice(`endpoint ${endpoint.endpoint_id} is ${answer.status}`);
    } catch (err) { showError(err.message); }
    renderWebhooks();
  };
  return el("div", { class: "toolbar endpoint-actions" }, badge(endpoint.status),
    el("span", { class: "mono" }, endpoint.url),
    endpoint.status === "active" ? el("button", { class: "pause", type: "button", onclick: act("pause") }, "Pause") : null,
    endpoint.status !== "active" ? el("button", { class: "resume", type: "button", onclick: act("resume") }, "Resume") : null);
}

async function renderWebhooks() {
  const selected = webhookEndpoint();
  const endpoints = await api("GET", "/api/webhooks");
  const body = $("#webhooks tbody");
  body.replaceChildren(...endpoints.map((e) => el("tr", {
    class: e.endpoint_id === selected ? "selected" : "",
    dataset: { endpoint: e.endpoint_id },
    onclick: () => { location.hash = `#view=webhooks&endpoint=${encodeURIComponent(e.endpoint_id)}`; },
  }, el("td", {}, idText(e.endpoint_id, { short: true })), el("td", {}, badge(e.status)),
     el("td", { class: "mono clip", title: e.url }, e.url), el("td", {}, e.event_types.map(shortType).join(", ")),
     el("td", {}, e.description || "–"), el("td", { class: "error clip", title: e.disabled_reason || "" }, e.disabled_reason || ""))));
  if (!endpoints.length) body.append(el("tr", {}, el("td", { colspan: 6, class: "hint" }, "no webhook endpoints (an admin registers one with POST /api/webhooks)")));
  const panel = $("#webhook-detail");
  if (!selected) {
    panel.replaceChildren(el("p", { class: "hint" }, "Pick an endpoint to see its delivery log."));
    return;
  }
  const deliveries = await api("GET", `/api/webhooks/${encodeURIComponent(selected)}/deliveries?limit=100`);
  const endpoint = endpoints.find((e) => e.endpoint_id === selected);
  panel.replaceChildren(endpointActions(endpoint), el("h3", {}, "Delivery log"), ...deliveries.map((d) => deliveryBlock(selected, d)));
  if (!deliveries.length) panel.append(el("p", { class: "hint" }, "no deliveries yet"));
}

views.webhooks = renderWebhooks;
// The page may have opened on this view before it was known.
if (state.route.view === "webhooks") render();
setInterval(() => {
  if (!state.token || document.hidden || state.route.view !== "webhooks") return;
  renderWebhooks().catch((e) => showError(e.message));
}, POLL_MS);
