//! `GET /api/events?context=SERVICE&aggregate_id=ID` (SPEC §3.7, admin): one aggregate's
//! events as CloudEvents (structured JSON, SPEC §4), in sequence order — or, without
//! `aggregate_id`, the service's whole store in store order, a page at a time
//! (`?limit&after`). Each command service serves it for its own event store; the gateway
//! sends the request to the service named by `context`.

use axum::extract::{FromRef, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shop_schemas::{CloudEvent, Service};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::store::EventStore;
use shop_sql::Pool;
use shop_web::auth::{Admin, JwtKeys};
use shop_web::http::{Problem, StrictQuery};

#[derive(Clone)]
struct EventsState {
    service: Service,
    store: EventStore,
    jwt: JwtKeys,
}

impl FromRef<EventsState> for JwtKeys {
    fn from_ref(state: &EventsState) -> Self {
        state.jwt.clone()
    }
}

/// The query of `GET /api/events`; anything else is a 400.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    context: Option<String>,
    aggregate_id: Option<String>,
    limit: Option<String>,
    after: Option<String>,
    upcast: Option<String>,
    #[serde(rename = "consistency")]
    _consistency: Option<String>,
}

/// A CloudEvent in structured JSON (SPEC §4), with Shop's extension attributes.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CloudEvent)]
#[allow(dead_code)] // the document's description of `shop_schemas::CloudEvent`
struct CloudEventDoc {
    #[schema(example = "1.0")]
    specversion: String,
    id: uuid::Uuid,
    #[schema(example = "/shop/orders")]
    source: String,
    #[serde(rename = "type")]
    #[schema(example = "shop.orders.OrderPlaced")]
    ty: String,
    /// The aggregate id.
    subject: String,
    time: DateTime<Utc>,
    dataschema: String,
    #[schema(example = "application/json")]
    datacontenttype: String,
    /// The aggregate's event number, from 1, as a string.
    #[schema(example = "1")]
    sequence: String,
    correlationid: String,
    causationid: String,
    traceparent: String,
    #[schema(value_type = Object)]
    data: serde_json::Value,
}

/// The services' names, as `context` takes them.
fn contexts() -> String {
    Service::ALL
        .iter()
        .map(|s| s.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Page size of `GET /api/events` when `limit` is not given, and its maximum.
const MAX_LIMIT: i64 = 500;

/// One aggregate's events in sequence order, or with no `aggregate_id` every event of the
/// service's store in store order; a page at a time (`?limit&after`, `after` = the last
/// event id of the previous page, a `Link: <...>; rel="next"` header when one may follow).
#[utoipa::path(
    get,
    path = "/api/events",
    tag = "operations",
    params(
        ("context" = String, Query, description = "The service whose events: customers, inventory, orders, payments, shipping or notifications",
            pattern = "^(customers|inventory|orders|payments|shipping|notifications)$"),
        ("aggregate_id" = Option<String>, Query, description = "Only this aggregate's events (an order, product, customer, wallet or shipment id); without it, the service's whole store",
            min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_-]+$"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Page size (default 500)"),
        ("after" = Option<uuid::Uuid>, Query, description = "The last event id of the previous page"),
        ("upcast" = Option<bool>, Query, description = "`true`: each event as this build reads it, its data upcast to its type's newest version (which `dataschema` names); without it, as stored, at the version it was written at"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of events, in order.", body = Vec<CloudEventDoc>,
            headers(("link" = String, description = "`<...>; rel=\"next\"` when another page may follow"))),
        (status = 400, description = "A missing or unknown context, a malformed aggregate id, limit or upcast, or an `after` that is no event of this store."),
        (status = 403, description = "Admins only."),
        (status = 404, description = "The aggregate has no events."),
    )
)]
async fn list_events(
    State(state): State<EventsState>,
    _admin: Admin,
    headers: axum::http::HeaderMap,
    uri: axum::http::Uri,
    StrictQuery(query): StrictQuery<EventsQuery>,
) -> Result<Response, Problem> {
    // The store is the source of truth: a consistency token is always satisfied here,
    // but it must be one this API issues.
    if let Some(Err(problem)) = shop_web::consistency::requested_tokens(&headers, &uri) {
        return Err(problem);
    }
    let context = query.context.as_deref().ok_or_else(|| {
        Problem::bad_request(format!("context is required: one of {}", contexts()))
    })?;
    if context != state.service.name() {
        return Err(Problem::bad_request(format!(
            "context must be one of {} (this is {})",
            contexts(),
            state.service.name()
        )));
    }
    let aggregate_id = match query.aggregate_id {
        None => None,
        Some(id)
            if (1..=128).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Some(id)
        }
        Some(_) => {
            return Err(Problem::bad_request(
                "aggregate_id must be an aggregate's id (1 to 128 letters, digits, - or _)",
            ))
        }
    };
    let limit = match &query.limit {
        None => MAX_LIMIT,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                Problem::bad_request(format!("limit must be an integer from 1 to {MAX_LIMIT}"))
            })?,
    };
    let upcast = match query.upcast.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(Problem::bad_request("upcast must be true or false")),
    };
    let after = match &query.after {
        None => 0,
        Some(text) => {
            let id = uuid::Uuid::parse_str(text)
                .map_err(|_| Problem::bad_request("after must be an event id"))?;
            state
                .store
                .position_of(id)
                .await
                .map_err(|e| Problem::internal(&e))?
                .ok_or_else(|| {
                    Problem::bad_request("after must be the id of an event of this store")
                })?
        }
    };
    let events = state
        .store
        .events_page(aggregate_id.as_deref(), after, limit)
        .await
        .map_err(|e| Problem::internal(&e))?;
    if let (Some(id), true, None) = (&aggregate_id, events.is_empty(), &query.after) {
        return Err(Problem::not_found(format!(
            "no {} events of aggregate {id}",
            state.service.name()
        )));
    }
    let next = match (events.last(), events.len() as i64 == limit) {
        (Some(last), true) => {
            let mut link = format!("</api/events?context={context}");
            if let Some(id) = &aggregate_id {
                link.push_str(&format!("&aggregate_id={id}"));
            }
            if upcast {
                link.push_str("&upcast=true");
            }
            link.push_str(&format!(
                "&limit={limit}&after={}>; rel=\"next\"",
                last.event_id
            ));
            HeaderValue::from_str(&link).ok()
        }
        _ => None,
    };
    let body: Vec<CloudEvent> = events
        .iter()
        .map(|e| match upcast {
            true => e.upcast().to_cloud_event(state.service),
            false => e.to_cloud_event(state.service),
        })
        .collect();
    let mut response = Json(body).into_response();
    if let Some(link) = next {
        response.headers_mut().insert(header::LINK, link);
    }
    Ok(response)
}

fn routes() -> OpenApiRouter<EventsState> {
    OpenApiRouter::new().routes(routes!(list_events))
}

/// `GET /api/events` over `service`'s event store in `pool`.
pub fn router(service: Service, pool: Pool, jwt: JwtKeys) -> axum::Router {
    routes()
        .with_state(EventsState {
            service,
            store: EventStore::new(pool),
            jwt,
        })
        .split_for_parts()
        .0
}

/// The route's part of the public OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}
