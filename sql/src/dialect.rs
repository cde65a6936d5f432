//! Which backend runs a statement ([`Dialect`]), and the spelling of the few constructs
//! the two spell differently.

/// Which backend runs a statement; the spelling of what differs between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    /// `column <op> the list bound at $n`: membership in a list bound with
    /// [`Arg::list`] (an array in PostgreSQL, a JSON array in SQLite).
    pub fn in_list(self, n: usize) -> String {
        match self {
            Dialect::Postgres => format!("= ANY(${n})"),
            Dialect::Sqlite => format!("IN (SELECT value FROM json_each(${n}))"),
        }
    }

    /// Row locks for the rest of the transaction (SQLite's writer lock already covers it).
    pub fn for_update(self) -> &'static str {
        match self {
            Dialect::Postgres => "FOR UPDATE",
            Dialect::Sqlite => "",
        }
    }
}
