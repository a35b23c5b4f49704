//! Partial answers of a scattered query: a store spread over several nodes (the control
//! node's) normally fails a query when one node does not answer; a caller that accepts
//! the merged answer of the others runs the query inside [`allowing_partial`] and learns
//! which nodes are missing from it. Carried by a task-local, so the [`crate::Store`]
//! trait and its query types stay the same for every backend (the others never call
//! [`note_missing`]).

use std::cell::RefCell;
use std::future::Future;

tokio::task_local! {
    static MISSING: RefCell<Vec<String>>;
}

/// Runs `query` accepting partial answers; returns its output and the nodes that did
/// not answer (empty when every node did, or the store is not scattered), sorted.
pub async fn allowing_partial<F: Future>(query: F) -> (F::Output, Vec<String>) {
    MISSING
        .scope(RefCell::new(Vec::new()), async move {
            let out = query.await;
            let mut missing = MISSING.with(|m| m.take());
            missing.sort();
            missing.dedup();
            (out, missing)
        })
        .await
}

/// Records that `node` did not answer; `false` when the caller does not accept partial
/// answers (the query must then fail).
pub fn note_missing(node: &str) -> bool {
    MISSING
        .try_with(|m| m.borrow_mut().push(node.to_owned()))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_nodes_are_collected_only_inside_the_scope() {
        assert!(!note_missing("a"));
        let (out, missing) = allowing_partial(async {
            assert!(note_missing("b"));
            assert!(note_missing("a"));
            assert!(note_missing("b"));
            7
        })
        .await;
        assert_eq!(out, 7);
        assert_eq!(missing, ["a", "b"]);
    }
}
