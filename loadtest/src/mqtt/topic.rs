//! Topic patterns: `%i` stands for the client's index in its role.

/// Replaces every `%i` in `pattern` with `i`.
pub fn expand(pattern: &str, i: usize) -> String {
    if !pattern.contains("%i") {
        return pattern.to_string();
    }
    pattern.replace("%i", &i.to_string())
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn replaces_every_index() {
        assert_eq!(expand("t/%i", 3), "t/3");
        assert_eq!(expand("a/%i/b/%i", 12), "a/12/b/12");
        assert_eq!(expand("%i", 0), "0");
    }

    #[test]
    fn leaves_other_text() {
        assert_eq!(expand("t/#", 5), "t/#");
        assert_eq!(expand("$share/g/t/+", 1), "$share/g/t/+");
        assert_eq!(expand("100%/x", 1), "100%/x");
        assert_eq!(expand("%d/%", 1), "%d/%");
    }
}
