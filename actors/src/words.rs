//! English for counts, shared by every message that says how many: "1 attempt", "2 attempts".

/// `n` and the noun in the number `n` needs: `count(1, "attempt", "attempts")` is
/// "1 attempt", `count(0, "pass", "passes")` is "0 passes".
pub fn count<N>(n: N, one: &str, many: &str) -> String
where
    N: std::fmt::Display + PartialEq + From<u8>,
{
    let noun = if n == N::from(1) { one } else { many };
    format!("{n} {noun}")
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn one_is_singular_and_every_other_number_plural() {
        assert_eq!(count(1u32, "attempt", "attempts"), "1 attempt");
        assert_eq!(count(0u32, "attempt", "attempts"), "0 attempts");
        assert_eq!(count(2usize, "pass", "passes"), "2 passes");
    }
}
