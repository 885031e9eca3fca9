//! How much work one poll of the ORM's futures does before yielding to the
//! runtime.
//!
//! A web server runs many requests' futures on a few runtime threads, and
//! while one future's `poll` runs, every other task on its thread waits.
//! Work that grows with the rows (binding a flush's arrays, applying its
//! generated keys, decoding and tracking a load's rows) therefore goes a
//! chunk of rows at a time, with a yield in between; work of a chunk or
//! less (a web request's) never yields, so it costs no trip through the
//! scheduler.

/// Rows bound, applied or loaded between two yields to the runtime.
/// Binding 100,000 rows of two text columns took 15-30 ms in one poll, and
/// a tracked load of 500,000 rows held its thread for 80 ms; a chunk this
/// size costs about a millisecond, and a yield per chunk nothing
/// measurable.
pub(crate) const ROWS_PER_YIELD: usize = 4096;

/// Hands `items` to `each` [`ROWS_PER_YIELD`] at a time, with a yield to
/// the runtime between two chunks (none after the last, none for a page
/// of rows): for decoding a load's rows once they are all read. Stops at
/// the first error.
pub(crate) async fn for_each_chunk<'r, R>(
    items: &'r [R],
    mut each: impl FnMut(&'r [R]) -> crate::error::Result<()>,
) -> crate::error::Result<()> {
    let mut chunks = items.chunks(ROWS_PER_YIELD).peekable();
    while let Some(chunk) = chunks.next() {
        each(chunk)?;
        if chunks.peek().is_some() {
            tokio::task::yield_now().await;
        }
    }
    Ok(())
}

/// Each of `items` mapped by `f`, in order, [`ROWS_PER_YIELD`] at a time
/// with a yield to the runtime in between, as [`for_each_chunk`] hands
/// them over: a load's rows decoded once they are all read. Stops at the
/// first error.
pub(crate) async fn map_in_chunks<R, T>(
    items: &[R],
    mut f: impl FnMut(&R) -> crate::error::Result<T>,
) -> crate::error::Result<Vec<T>> {
    let mut mapped = Vec::with_capacity(items.len());
    for_each_chunk(items, |chunk| {
        for item in chunk {
            mapped.push(f(item)?);
        }
        Ok(())
    })
    .await?;
    Ok(mapped)
}
