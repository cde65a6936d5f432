//! Read-your-writes (SPEC §3.6): every accepted command answers with an
//! `X-Consistency-Token` naming the aggregate version it wrote; a read that carries it
//! waits (up to `SHOP_CONSISTENCY_WAIT_MS`) until every projection fed by that service's
//! topic has applied that version, and otherwise answers with `X-Consistency: stale`.
//!
//! A token is `<service>:<aggregate id>:<sequence>`; several are joined by commas. This
//! is the token's side (its format, its headers, reading it from a request); waiting for
//! the projectors to apply it is `shop_eventing::consistency`.

use std::str::FromStr;

use shop_schemas::Service;

/// The response header carrying a command's token, and the request header a read sends.
pub const TOKEN_HEADER: &str = "x-consistency-token";
/// `stale` on a read that could not wait long enough.
pub const STATE_HEADER: &str = "x-consistency";

/// One aggregate version a command wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyToken {
    pub service: Service,
    pub subject: String,
    pub sequence: i64,
}

impl ConsistencyToken {
    pub fn new(service: Service, subject: impl Into<String>, sequence: i64) -> Self {
        ConsistencyToken {
            service,
            subject: subject.into(),
            sequence,
        }
    }

    /// Tokens of a header or query value (`a,b,...`); `None` if any is malformed.
    pub fn parse_list(value: &str) -> Option<Vec<ConsistencyToken>> {
        value
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| t.parse().ok())
            .collect()
    }
}

impl std::fmt::Display for ConsistencyToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.service, self.subject, self.sequence)
    }
}

impl FromStr for ConsistencyToken {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let mut parts = s.splitn(3, ':');
        let service = parts.next().ok_or(())?.parse().map_err(|_| ())?;
        // Subjects are aggregate ids: anything else is not a token this API issued (and
        // must not reach a query: a NUL byte is not valid PostgreSQL text).
        let subject = parts
            .next()
            .filter(|s| {
                (1..=128).contains(&s.len())
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
            .ok_or(())?;
        let sequence = parts.next().ok_or(())?.parse().map_err(|_| ())?;
        Ok(ConsistencyToken::new(service, subject, sequence))
    }
}

/// The most tokens one read may carry. A command answers one; a client that joins the
/// tokens of several commands before one read needs a few. Each costs the read a wait
/// on the read models, so a read with hundreds of them (an anonymous 71 KB header of
/// 1,500 made one read cost a CPU-second) is refused.
pub const MAX_TOKENS: usize = 32;

/// The tokens a read carries, from its `X-Consistency-Token` header and its
/// `consistency` query parameter (both, when both are given). `None`: none; `Some(Err)`:
/// one is malformed, or there are more than [`MAX_TOKENS`] (a 400 for the client).
pub fn requested_tokens(
    headers: &axum::http::HeaderMap,
    uri: &axum::http::Uri,
) -> Option<Result<Vec<ConsistencyToken>, crate::http::Problem>> {
    let mut values = Vec::new();
    if let Some(value) = headers.get(TOKEN_HEADER) {
        values.push(value.to_str().unwrap_or_default().to_string());
    }
    if let Ok(pairs) = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri) {
        values.extend(
            pairs
                .0
                .into_iter()
                .filter_map(|(key, value)| (key == "consistency").then_some(value)),
        );
    }
    if values.is_empty() {
        return None;
    }
    let mut tokens = Vec::new();
    for value in values {
        // Counted before parsing: a huge value costs no more than its commas.
        if value.split(',').filter(|t| !t.trim().is_empty()).count() + tokens.len() > MAX_TOKENS {
            return Some(Err(crate::http::Problem::bad_request(format!(
                "a read carries at most {MAX_TOKENS} consistency tokens"
            ))));
        }
        match ConsistencyToken::parse_list(&value) {
            Some(list) if !list.is_empty() => tokens.extend(list),
            _ => {
                return Some(Err(crate::http::Problem::bad_request(
                    "the consistency token is not one this API issued",
                )))
            }
        }
    }
    Some(Ok(tokens))
}

/// A command's response with its token in `X-Consistency-Token`.
pub fn with_token(
    mut response: axum::response::Response,
    token: &ConsistencyToken,
) -> axum::response::Response {
    if let Ok(value) = axum::http::HeaderValue::from_str(&token.to_string()) {
        response.headers_mut().insert(TOKEN_HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let token = ConsistencyToken::new(Service::Orders, "0192-abc", 3);
        assert_eq!(token.to_string(), "orders:0192-abc:3");
        assert_eq!(
            ConsistencyToken::parse_list("orders:0192-abc:3, inventory:x:1"),
            Some(vec![
                token,
                ConsistencyToken::new(Service::Inventory, "x", 1)
            ])
        );
        for bad in [
            "orders:x",
            "nope:x:1",
            "orders::1",
            "orders:x:y",
            "orders:a\u{0}b:1",
            "orders:a b:1",
        ] {
            assert_eq!(ConsistencyToken::parse_list(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_read_carries_a_bounded_number_of_tokens() {
        let list = |n: usize| {
            (0..n)
                .map(|i| format!("orders:o{i}:1"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let uri: axum::http::Uri = "/api/orders".parse().unwrap();
        let read = |n: usize| {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(TOKEN_HEADER, list(n).parse().unwrap());
            requested_tokens(&headers, &uri).unwrap()
        };
        assert_eq!(read(MAX_TOKENS).unwrap().len(), MAX_TOKENS);
        let refused = read(1_500).unwrap_err();
        assert_eq!(refused.status, 400);
        assert!(refused.detail.contains("at most"), "{}", refused.detail);
        // Across the header and the query, too.
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(TOKEN_HEADER, list(MAX_TOKENS).parse().unwrap());
        let uri: axum::http::Uri = "/api/orders?consistency=orders:x:1".parse().unwrap();
        assert!(requested_tokens(&headers, &uri).unwrap().is_err());
    }
}
