//! [`StageIndex`]: a stage's position in a [`StageGraph`](super::StageGraph), and the error for
//! an index that names no stage.

use std::fmt;

/// The position of a stage in a [`StageGraph`](super::StageGraph) (or in the builder that
/// made it): the order in which it was added, from 0.
///
/// This is the graph's node id for petgraph's algorithms (see the [module
/// docs](super#petgraph)), and the cheap way to name a stage: looking a stage up by index is an
/// array access, by id a hash. Indices are only meaningful for the graph they came from; every
/// method that takes one returns `None` (or an error) for an index past the last stage rather
/// than panicking.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StageIndex(u32);

impl StageIndex {
    /// The index `index`, if it fits the `u32` a graph stores indices in.
    #[must_use]
    pub fn new(index: usize) -> Option<Self> {
        u32::try_from(index).ok().map(StageIndex)
    }

    /// The index as a `usize`, for indexing a slice with one entry per stage.
    #[must_use]
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// Wraps an index the graph itself produced (always below its stage count, which fits
    /// `u32`).
    pub(crate) const fn from_u32(index: u32) -> Self {
        StageIndex(index)
    }

    /// The index as the graph stores it.
    pub(crate) const fn as_u32(self) -> u32 {
        self.0
    }
}

impl fmt::Debug for StageIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StageIndex({})", self.0)
    }
}

impl fmt::Display for StageIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<StageIndex> for usize {
    fn from(index: StageIndex) -> usize {
        index.index()
    }
}

impl From<u32> for StageIndex {
    fn from(index: u32) -> Self {
        StageIndex(index)
    }
}

/// A [`StageIndex`] that names no stage of the builder it was handed to.
///
/// Returned by [`StageGraphBuilder::add_dependency`](super::StageGraphBuilder::add_dependency)
/// when either index is not one that builder handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stage index {index} is out of range: there are {len} stages")]
pub struct IndexOutOfRange {
    /// The index given.
    pub index: StageIndex,
    /// How many stages there were, so valid indices are `0..len`.
    pub len: usize,
}
