//! [`RowChunks`]: the decoded rows of a load that tracks them all at once
//! (a relation load, each level of an eager load), kept in chunks instead
//! of one vector.
//!
//! A load does not know how many rows will come. A vector grown row by row
//! doubles, copying every row it holds each time: for W7's 10,000 comments
//! that was 2% of the ORM side's instructions, and each doubling held the
//! old buffer and one twice its size at once. Full chunks are never copied;
//! only the first grows as a vector does, so a load of a few rows
//! allocates no more than it did.

/// How many rows a chunk holds: enough that a chunk's allocation is a
/// small share of its rows' cost, few enough that the first chunk's growth
/// copies little.
const CHUNK: usize = 1024;

/// Where a load puts the rows it decodes, in arrival order, and how the
/// tracking of a whole load takes them back.
pub(crate) trait LoadedRows<T>: Default {
    /// Takes the next row.
    fn push(&mut self, row: T);

    /// How many rows it holds.
    fn len(&self) -> usize;

    /// The rows in arrival order, a vector at a time.
    fn into_chunks(self) -> impl Iterator<Item = Vec<T>>;
}

impl<T> LoadedRows<T> for Vec<T> {
    #[inline]
    fn push(&mut self, row: T) {
        Vec::push(self, row);
    }

    fn len(&self) -> usize {
        Vec::len(self)
    }

    fn into_chunks(self) -> impl Iterator<Item = Vec<T>> {
        std::iter::once(self)
    }
}

/// Rows in arrival order, in chunks of [`CHUNK`].
pub(crate) struct RowChunks<T> {
    /// The chunks filled so far, each of [`CHUNK`] rows.
    full: Vec<Vec<T>>,
    /// The chunk being filled.
    last: Vec<T>,
}

impl<T> Default for RowChunks<T> {
    fn default() -> Self {
        RowChunks { full: Vec::new(), last: Vec::new() }
    }
}

impl<T> LoadedRows<T> for RowChunks<T> {
    #[inline]
    fn push(&mut self, row: T) {
        if self.last.len() == CHUNK {
            self.start_chunk();
        }
        self.last.push(row);
    }

    fn len(&self) -> usize {
        self.full.len() * CHUNK + self.last.len()
    }

    fn into_chunks(self) -> impl Iterator<Item = Vec<T>> {
        self.full.into_iter().chain(std::iter::once(self.last))
    }
}

impl<T> RowChunks<T> {
    /// Files the last chunk, which is full, among the full ones.
    #[cold]
    fn start_chunk(&mut self) {
        let full = std::mem::replace(&mut self.last, Vec::with_capacity(CHUNK));
        self.full.push(full);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(rows: usize) -> RowChunks<usize> {
        let mut chunks = RowChunks::default();
        (0..rows).for_each(|row| chunks.push(row));
        chunks
    }

    #[test]
    fn rows_come_back_in_order_with_their_count() {
        for rows in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 7] {
            let chunks = filled(rows);
            assert_eq!(chunks.len(), rows);
            let back: Vec<usize> = chunks.into_chunks().flatten().collect();
            assert_eq!(back, (0..rows).collect::<Vec<_>>());
        }
    }

    #[test]
    fn full_chunks_are_never_grown() {
        let chunks = filled(2 * CHUNK + 1);
        assert!(chunks.full.iter().all(|chunk| chunk.len() == CHUNK && chunk.capacity() == CHUNK));
        assert_eq!(chunks.last.capacity(), CHUNK);
    }
}
