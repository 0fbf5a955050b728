//! Cursor pagination shared by every list endpoint: `?limit=` (default 50, max 500) and
//! `?starting_after=<id>`; replies `{ data, has_more, next_cursor }`.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::problem::ApiError;

/// Default page size.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest page size.
pub const MAX_LIMIT: usize = 500;

/// The common list parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size, 1-500 (default 50).
    pub limit: Option<i64>,
    /// Return items after this id (the previous page's `next_cursor`).
    pub starting_after: Option<String>,
}

impl PageParams {
    /// The validated page size.
    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT as i64).contains(&n) => Ok(n as usize),
            Some(_) => Err(ApiError::invalid_field(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            )),
        }
    }

    /// The validated cursor: an id of the listed resource (`prefix`, named `what` in the
    /// error), or none.
    pub fn after(&self, prefix: &str, what: &str) -> Result<Option<crate::id::Id>, ApiError> {
        self.starting_after
            .as_deref()
            .map(|c| {
                crate::id::Id::parse(c, prefix).ok_or_else(|| {
                    ApiError::invalid_field(
                        "starting_after",
                        format!("is not {what} id ({prefix}_…)"),
                    )
                })
            })
            .transpose()
    }
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    /// The items, oldest first.
    pub data: Vec<T>,
    /// Whether another page follows.
    pub has_more: bool,
    /// Pass as `starting_after` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// The page of `items` (a store page, at most the limit), each shown by `body`; when more
    /// follow, the cursor is the last item's id (`cursor`).
    pub fn of<I>(
        items: &[I],
        has_more: bool,
        cursor: impl Fn(&I) -> String,
        body: impl FnMut(&I) -> T,
    ) -> Self {
        Page {
            data: items.iter().map(body).collect(),
            has_more,
            next_cursor: if has_more {
                items.last().map(cursor)
            } else {
                None
            },
        }
    }
}
