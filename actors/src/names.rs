//! Names of loops and tests become paths (transcripts, workdirs, git refs), so they are validated
//! against one pattern everywhere: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.

/// Why a name was refused, in words a user can act on.
pub fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return Err("a name must not be empty".into());
    };
    if !first.is_ascii_alphanumeric() {
        return Err(format!(
            "`{name}` must start with a letter or digit (pattern [A-Za-z0-9][A-Za-z0-9._-]{{0,63}})"
        ));
    }
    if name.len() > 64 {
        return Err(format!("`{name}` is longer than 64 characters"));
    }
    if let Some(bad) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "`{name}` contains `{bad}`; only letters, digits, `.`, `_` and `-` are allowed"
        ));
    }
    if name.contains("..") || name.ends_with('.') || name.ends_with(".lock") {
        // `..` and a trailing `.`/`.lock` are invalid in git ref names, and names become refs.
        return Err(format!(
            "`{name}` must not contain `..` or end with `.` or `.lock`"
        ));
    }
    Ok(())
}

/// True when `name` is a valid loop or test name.
pub fn is_valid_name(name: &str) -> bool {
    check_name(name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in ["auth", "CP-SPEC-005", "a", "x.y_z-1", &"a".repeat(64)] {
            assert!(is_valid_name(n), "{n}");
        }
    }

    #[test]
    fn refuses_names_that_could_escape_a_directory() {
        for n in [
            "",
            "../x",
            "a/b",
            ".hidden",
            "-x",
            "a..b",
            "a b",
            &"a".repeat(65),
            "x.lock",
            "é",
        ] {
            assert!(!is_valid_name(n), "{n}");
        }
    }
}
