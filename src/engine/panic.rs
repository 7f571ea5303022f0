//! Panic text: what a stage's report says when its executor panicked.

/// Why an attempt failed when its executor panicked with `payload`.
#[cold]
pub(super) fn panicked(payload: &(dyn std::any::Any + Send)) -> String {
    format!("executor panicked: {}", message(payload))
}

/// The text a panic was raised with (`panic!("…")`'s message), for host code the crate
/// contains: executors here, gates in the pipeline.
#[cold]
pub(crate) fn message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_panic_message_is_quoted_whatever_its_type() {
        let text = |payload: Box<dyn std::any::Any + Send>| panicked(payload.as_ref());
        assert_eq!(text(Box::new("boom")), "executor panicked: boom");
        assert_eq!(
            text(Box::new(format!("index {} out of range", 7))),
            "executor panicked: index 7 out of range"
        );
        assert_eq!(
            text(Box::new(42_u8)),
            "executor panicked: (non-string panic payload)"
        );
    }
}
