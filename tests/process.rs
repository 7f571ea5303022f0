//! Process executor tests (being written).
