//! Failure fingerprints: verify's output with what changes from run to run replaced, hashed, so
//! that the same failure is recognised across attempts (repeated failures, lessons).

use sha2::{Digest, Sha256};

/// A fingerprint of a failure: verify's output with what changes from run to run (numbers,
/// hex hashes, paths, timestamps) replaced, hashed. `None` when there is no output.
pub fn fingerprint(output: &str) -> Option<String> {
    let normalised = normalise(output);
    if normalised.trim().is_empty() {
        return None;
    }
    let digest = Sha256::digest(normalised.as_bytes());
    Some(hex::encode(&digest[..8]))
}

/// Verify output with volatile parts replaced by placeholders.
pub fn normalise(output: &str) -> String {
    let mut out = String::with_capacity(output.len());
    for word in output.split_whitespace() {
        let w = if word.contains('/') {
            "<path>".to_string()
        } else if is_hash(word.trim_matches(|c: char| !c.is_ascii_alphanumeric())) {
            "<hash>".to_string()
        } else {
            let mut s = String::new();
            let mut in_digits = false;
            for c in word.chars() {
                if c.is_ascii_digit() {
                    if !in_digits {
                        s.push('#');
                    }
                    in_digits = true;
                } else {
                    in_digits = false;
                    s.push(c);
                }
            }
            s
        };
        out.push_str(&w);
        out.push(' ');
    }
    out
}

fn is_hash(word: &str) -> bool {
    word.len() >= 7
        && word.chars().all(|c| c.is_ascii_hexdigit())
        && word.chars().any(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_ignore_numbers_paths_and_hashes() {
        let a = fingerprint("test foo failed at /tmp/a1/x.rs:12 after 35ms (commit 1a2b3c4d5e)");
        let b = fingerprint("test foo failed at /home/b/y.rs:99 after 7ms (commit ffee0011aa)");
        let c = fingerprint("test bar failed at /tmp/a1/x.rs:12 after 35ms");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(fingerprint("  \n"), None);
    }
}
