//! One group-commit batch, executed synchronously on the writer's connection (`conn.rs`):
//! the retry policy around the transaction (`commit.rs` runs the transaction, `plan.rs`
//! works out its rows, `steps.rs` holds its statements) and the multi-row statement
//! helpers they use.
//!
//! Runs on a blocking thread (`group.rs` hands it the batch); nothing here awaits.

use rusqlite::{Connection, Row, ToSql};
use std::ops::Range;

use super::request::{Outcome, Request, mismatch};
use crate::store::error::StoreError;

mod commit;
mod plan;
mod steps;

pub(super) use commit::commit_batch;
#[cfg(test)]
pub(super) use steps::lookup_sql;
pub(super) use steps::warm;

/// Most rows in one multi-row statement; a power of two (see [`chunks`]).
const MAX_ROWS: usize = 64;

#[cfg(test)]
thread_local! {
    /// Statements [`per_chunk`] ran on this thread, for the test that pins how many
    /// statements a batch costs (a batch runs synchronously on the caller's thread).
    pub(super) static STATEMENTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Executes a batch and returns each request's outcome, in order: first in one
/// transaction; a client id repeated within the batch then runs alone (and finds the
/// first one's ids); if the batch transaction fails, every request runs in a transaction
/// of its own, so one bad request cannot fail the others. The flag is false when a
/// connection-level error (`Unavailable`) was seen: the caller reopens the connection.
pub(super) fn execute(conn: &mut Connection, batch: &[Request]) -> (Vec<Outcome>, bool) {
    match commit_batch(conn, batch) {
        Ok(mut outcomes) => {
            let mut healthy = true;
            for (request, outcome) in batch.iter().zip(outcomes.iter_mut()) {
                if matches!(outcome, Outcome::Alone) {
                    *outcome = alone(conn, request);
                    healthy &= !unavailable(outcome);
                }
            }
            (outcomes, healthy)
        }
        Err(e) if batch.len() == 1 => {
            let healthy = !matches!(e, StoreError::Unavailable(_));
            (vec![Outcome::Failed(e)], healthy)
        }
        Err(e) => {
            tracing::warn!(
                requests = batch.len(),
                error = %e,
                "group commit failed; retrying each write on its own"
            );
            let mut healthy = !matches!(e, StoreError::Unavailable(_));
            let outcomes = batch
                .iter()
                .map(|request| {
                    let outcome = alone(conn, request);
                    healthy &= !unavailable(&outcome);
                    outcome
                })
                .collect();
            (outcomes, healthy)
        }
    }
}

/// One request in a transaction of its own.
fn alone(conn: &mut Connection, request: &Request) -> Outcome {
    match commit_batch(conn, std::slice::from_ref(request)) {
        Ok(mut outcomes) => match outcomes.pop() {
            // A batch of one has no repeated client id, so it is never `Alone`.
            Some(Outcome::Alone) | None => Outcome::Failed(mismatch()),
            Some(outcome) => outcome,
        },
        Err(e) => Outcome::Failed(e),
    }
}

fn unavailable(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Failed(StoreError::Unavailable(_)))
}

/// Splits `0..len` into ranges of at most [`MAX_ROWS`], the last ones powers of two, so
/// that only a handful of distinct statement texts (and cached prepared statements)
/// exist per table however the batch sizes vary.
pub(super) fn chunks(len: usize) -> impl Iterator<Item = Range<usize>> {
    let mut start = 0;
    std::iter::from_fn(move || {
        let left = len - start;
        if left == 0 {
            return None;
        }
        let size = if left >= MAX_ROWS {
            MAX_ROWS
        } else {
            1 << (usize::BITS - 1 - left.leading_zeros())
        };
        let range = start..start + size;
        start += size;
        Some(range)
    })
}

/// `head` followed by `rows` copies of `tuple`, comma-separated, then `tail`.
fn multi_row(head: &str, tuple: &str, rows: usize, tail: &str) -> String {
    let mut sql = String::with_capacity(head.len() + rows * (tuple.len() + 2) + tail.len());
    sql.push_str(head);
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(tuple);
    }
    sql.push_str(tail);
    sql
}

/// A multi-row statement: its text before the rows, one row's tuple, its text after.
pub(super) type Shape = (&'static str, &'static str, &'static str);

/// Runs one `shape` statement per chunk of `items` (see [`chunks`]). Its parameters are
/// `fixed`, then what `params` adds for each item of the chunk; `row` sees every row it
/// returns (none for an `INSERT`).
pub(super) fn per_chunk<'a, T>(
    conn: &Connection,
    shape: Shape,
    items: &'a [T],
    fixed: &[&'a dyn ToSql],
    params: impl Fn(&'a T, &mut Vec<&'a dyn ToSql>),
    mut row: impl FnMut(&Row<'_>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut values: Vec<&'a dyn ToSql> = Vec::new();
    for range in chunks(items.len()) {
        let mut stmt = conn.prepare_cached(&multi_row(shape.0, shape.1, range.len(), shape.2))?;
        values.clear();
        values.extend_from_slice(fixed);
        for item in &items[range] {
            params(item, &mut values);
        }
        for (i, value) in values.iter().enumerate() {
            stmt.raw_bind_parameter(i + 1, value)?;
        }
        #[cfg(test)]
        STATEMENTS.with(|n| n.set(n.get() + 1));
        let mut rows = stmt.raw_query();
        while let Some(r) = rows.next()? {
            row(r)?;
        }
    }
    Ok(())
}

/// For statements that return nothing.
pub(super) fn no_rows(_: &Row<'_>) -> Result<(), StoreError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::chunks;

    #[test]
    fn chunks_cover_the_range_in_few_distinct_sizes() {
        for len in 0..300 {
            let ranges: Vec<_> = chunks(len).collect();
            let mut next = 0;
            for r in &ranges {
                assert_eq!(r.start, next);
                assert!(r.len().is_power_of_two() && r.len() <= super::MAX_ROWS);
                next = r.end;
            }
            assert_eq!(next, len);
        }
    }
}
