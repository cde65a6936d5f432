//! Load shedding: at most `limit` requests in flight to each upstream; one more is
//! refused at once with 503 and `Retry-After` instead of waiting in a queue that grows
//! with the load (memory and latency bounded at any offered rate).

use std::sync::atomic::{AtomicUsize, Ordering};

use shop_web::http::Problem;

use crate::Upstream;

/// The requests in flight to each upstream.
pub(crate) struct Shedder {
    limit: usize,
    in_flight: Vec<(Upstream, AtomicUsize)>,
}

/// A request counted in flight while it lives.
pub(crate) struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shedder {
    /// `limit` per upstream (0: no limit).
    pub(crate) fn new(limit: usize) -> Self {
        Shedder {
            limit,
            in_flight: [
                Upstream::Customers,
                Upstream::Inventory,
                Upstream::Orders,
                Upstream::Payments,
                Upstream::Shipping,
                Upstream::Notifications,
                Upstream::ReadApi,
            ]
            .into_iter()
            .map(|u| (u, AtomicUsize::new(0)))
            .collect(),
        }
    }

    /// A slot for one more request to `upstream`, or the 503 that refuses it.
    pub(crate) fn enter(&self, upstream: Upstream) -> Result<Option<Slot<'_>>, Problem> {
        if self.limit == 0 {
            return Ok(None);
        }
        let Some((_, count)) = self.in_flight.iter().find(|(u, _)| *u == upstream) else {
            return Ok(None);
        };
        if count.fetch_add(1, Ordering::AcqRel) >= self.limit {
            count.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("gateway_shed_total", "upstream" => upstream.name()).increment(1);
            return Err(Problem::unavailable(format!(
                "overloaded: {} requests to {} are in flight; try again shortly",
                self.limit,
                upstream.name()
            ))
            .retry_after(1));
        }
        Ok(Some(Slot(count)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_more_than_the_limit_is_refused_and_a_finished_request_frees_its_slot() {
        let shedder = Shedder::new(2);
        let a = shedder.enter(Upstream::Orders).unwrap();
        let _b = shedder.enter(Upstream::Orders).unwrap();
        let refused = shedder.enter(Upstream::Orders).err().unwrap();
        assert_eq!(refused.status, 503);
        assert_eq!(refused.retry_after, Some(1));
        // Other upstreams have their own slots.
        assert!(shedder.enter(Upstream::ReadApi).is_ok());
        drop(a);
        assert!(shedder.enter(Upstream::Orders).is_ok());
        assert!(Shedder::new(0).enter(Upstream::Orders).unwrap().is_none());
    }
}
