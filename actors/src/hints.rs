//! Hints: guidance from a person, put into the next prompts of a loop (or of one test).
//!
//! At most one hint is current per loop and one per test: a new one replaces the old. They live
//! in the store's `hints` tree, written by the API through the journal; the loop actor reads
//! them when it renders a prompt, so a hint reaches the very next attempt without a message to
//! the actor.

pub use crate::model::{Hint, HintKey};

/// The heading of the prompt's section of hints.
pub const HEADING: &str = "# Guidance from a person";

/// The prompt's section for `hints` (the loop's, then the test's), empty without any.
pub fn section(hints: &[Hint]) -> String {
    if hints.is_empty() {
        return String::new();
    }
    let mut out = format!("\n{HEADING}\n");
    for h in hints {
        out.push_str(&format!("{}\n", h.text.trim_end()));
    }
    out
}

/// The hints that go into a prompt for `test_id` of `loop_name`: the loop's own, then the
/// test's. A store that cannot be read gives none: a prompt without a hint is better than no
/// attempt.
pub fn for_prompt(store: &crate::store::Store, loop_name: &str, test_id: &str) -> Vec<Hint> {
    let read = |test: Option<&str>| match store.hint(loop_name, test) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, loop_name, "could not read the hints for a prompt");
            None
        }
    };
    read(None).into_iter().chain(read(Some(test_id))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn hint(test: Option<&str>, text: &str) -> Hint {
        Hint {
            loop_name: "auth".into(),
            test_id: test.map(Into::into),
            text: text.into(),
            author: "ana".into(),
            at: Utc::now(),
        }
    }

    #[test]
    fn a_hint_replaces_the_last_is_cleared_and_goes_with_its_loop() {
        use crate::store::{Batch, Store};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let write = |batch: Batch| store.apply(batch).unwrap();
        let before = store.loop_version("auth");
        write(Batch {
            hints: vec![hint(None, "old"), hint(Some("T-1"), "for T-1")],
            ..Batch::default()
        });
        assert!(
            store.loop_version("auth") > before,
            "views of the loop change"
        );
        write(Batch {
            hints: vec![hint(None, "new")],
            ..Batch::default()
        });
        let texts = |hints: Vec<Hint>| hints.into_iter().map(|h| h.text).collect::<Vec<_>>();
        assert_eq!(texts(for_prompt(&store, "auth", "T-1")), ["new", "for T-1"]);
        assert_eq!(texts(for_prompt(&store, "auth", "T-2")), ["new"]);
        // Another loop whose name starts the same has none of them.
        assert!(for_prompt(&store, "aut", "T-1").is_empty());

        write(Batch {
            clear_hints: vec![HintKey {
                loop_name: "auth".into(),
                test_id: None,
            }],
            ..Batch::default()
        });
        assert_eq!(texts(store.hints_of("auth").unwrap()), ["for T-1"]);
        write(Batch {
            forget_loops: vec!["auth".into()],
            ..Batch::default()
        });
        assert!(store.hints_of("auth").unwrap().is_empty());
    }

    #[test]
    fn no_hint_no_section() {
        assert_eq!(section(&[]), "");
    }

    #[test]
    fn hints_come_under_their_heading_in_order() {
        let s = section(&[
            hint(None, "Use sqlx.\n"),
            hint(Some("T-1"), "The form is in web/"),
        ]);
        assert_eq!(
            s,
            "\n# Guidance from a person\nUse sqlx.\nThe form is in web/\n"
        );
    }
}
