//! Command errors as problem+json: the one mapping from [`CommandError`] to [`Problem`].
//!
//! A domain error says which kind of refusal each of its variants is ([`Refusal`]); the
//! rest is common to every service: a lost race is 409 (retry), a taken unique key 409,
//! a failed store 500. Part of the web edge; the core knows nothing of HTTP.

use crate::command::CommandError;
use shop_web::http::{FieldError, Problem};

/// What kind of refusal a domain error is, as the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// 404: the aggregate does not exist (for this caller).
    NotFound,
    /// 409: the aggregate's state forbids the command.
    Conflict,
    /// 422: the command's value in this request field is out of bounds.
    Invalid { field: &'static str },
}

/// A domain error of an aggregate, answered over HTTP. The problem's detail is the
/// error's message.
pub trait Refusal: std::error::Error {
    /// The kind of this refusal.
    fn kind(&self) -> RefusalKind;

    /// The detail of a 409 when other commands kept winning the race for the aggregate.
    fn changed_concurrently() -> &'static str {
        "the aggregate was changed concurrently; retry the request"
    }

    /// The detail of a 409 when a unique key the service keeps is taken.
    fn taken(what: &str) -> String {
        format!("{what} is already taken")
    }
}

impl<E: Refusal> From<CommandError<E>> for Problem {
    fn from(error: CommandError<E>) -> Self {
        match error {
            CommandError::Rejected(e) => match e.kind() {
                RefusalKind::NotFound => Problem::not_found(e.to_string()),
                RefusalKind::Conflict => Problem::conflict(e.to_string()),
                RefusalKind::Invalid { field } => Problem::validation(vec![FieldError {
                    field: field.into(),
                    message: e.to_string(),
                }]),
            },
            CommandError::Conflict => Problem::conflict(E::changed_concurrently()),
            CommandError::Taken(what) => Problem::conflict(E::taken(&what)),
            CommandError::Unavailable(e) => Problem::internal(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum ThingError {
        #[error("no such thing")]
        NotFound,
        #[error("the thing is gone")]
        Gone,
        #[error("size must be positive")]
        BadSize,
    }

    impl Refusal for ThingError {
        fn kind(&self) -> RefusalKind {
            match self {
                ThingError::NotFound => RefusalKind::NotFound,
                ThingError::Gone => RefusalKind::Conflict,
                ThingError::BadSize => RefusalKind::Invalid { field: "size" },
            }
        }
    }

    fn status(error: CommandError<ThingError>) -> u16 {
        Problem::from(error).status
    }

    #[test]
    fn each_refusal_has_its_status_and_the_rest_is_common() {
        assert_eq!(status(CommandError::Rejected(ThingError::NotFound)), 404);
        assert_eq!(status(CommandError::Rejected(ThingError::Gone)), 409);
        assert_eq!(status(CommandError::Rejected(ThingError::BadSize)), 422);
        assert_eq!(status(CommandError::Conflict), 409);
        assert_eq!(status(CommandError::Taken("the SKU".into())), 409);
        assert_eq!(status(CommandError::Unavailable("down".into())), 500);
    }
}
