//! Maps a JSON pointer to the line it is on, in the TOML or JSON text it came from.
//!
//! TOML spans come from `toml_edit`. For JSON no maintained crate keeps spans next to a
//! `serde_json::Value`, so a small scanner walks the (already parsed, hence well-formed) text
//! along the pointer.

use toml_edit::{ImDocument, Item, Value as TomlValue};

/// A source text that can answer "which line is this pointer on".
#[derive(Debug)]
pub(crate) enum Locator {
    /// A parsed TOML document.
    Toml(ImDocument<String>),
    /// JSON text.
    Json(String),
    /// No text (a request body).
    None,
}

impl Locator {
    /// The 1-based line of the deepest part of `pointer` that exists in the text.
    pub(crate) fn line(&self, pointer: &str) -> Option<usize> {
        let segments = split_pointer(pointer);
        let (text, offset) = match self {
            Locator::Toml(doc) => (doc.raw(), toml_offset(doc, &segments)?),
            Locator::Json(text) => (text.as_str(), json_offset(text, &segments)?),
            Locator::None => return None,
        };
        Some(line_of(text, offset))
    }
}

/// The segments of a JSON pointer, unescaped (`~1` is `/`, `~0` is `~`).
pub(crate) fn split_pointer(pointer: &str) -> Vec<String> {
    if pointer.is_empty() {
        return Vec::new();
    }
    pointer
        .trim_start_matches('/')
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// Escapes one segment for a JSON pointer.
pub(crate) fn escape_segment(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// 1-based line number of byte `offset`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The alias a key may be written as in the user's file.
fn alias(key: &str) -> Option<&'static str> {
    (key == "tests_file").then_some("test_state_file")
}

fn toml_offset(doc: &ImDocument<String>, segments: &[String]) -> Option<usize> {
    enum Node<'a> {
        Item(&'a Item),
        Table(&'a toml_edit::Table),
        Value(&'a TomlValue),
    }
    let mut node = Node::Item(doc.as_item());
    let mut best: Option<usize> = None;
    for seg in segments {
        if let Node::Item(Item::Table(t)) = node {
            node = Node::Table(t);
        }
        if let Node::Item(Item::Value(v)) = node {
            node = Node::Value(v);
        }
        let next = match node {
            Node::Table(t) => t
                .get_key_value(seg)
                .or_else(|| alias(seg).and_then(|a| t.get_key_value(a)))
                .map(|(k, item)| {
                    best = k.span().map(|s| s.start).or(best);
                    Node::Item(item)
                }),
            Node::Item(Item::ArrayOfTables(a)) => {
                seg.parse::<usize>().ok().and_then(|i| a.get(i)).map(|t| {
                    best = t.span().map(|s| s.start).or(best);
                    Node::Table(t)
                })
            }
            Node::Value(TomlValue::InlineTable(t)) => t
                .get_key_value(seg)
                .or_else(|| alias(seg).and_then(|a| t.get_key_value(a)))
                .map(|(k, item)| {
                    best = k.span().map(|s| s.start).or(best);
                    Node::Item(item)
                }),
            Node::Value(TomlValue::Array(arr)) => {
                seg.parse::<usize>().ok().and_then(|i| arr.get(i)).map(|v| {
                    best = v.span().map(|s| s.start).or(best);
                    Node::Value(v)
                })
            }
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => break,
        }
    }
    best
}

fn json_offset(text: &str, segments: &[String]) -> Option<usize> {
    let b = text.as_bytes();
    let mut pos = skip_ws(b, 0);
    let mut best = None;
    for seg in segments {
        match b.get(pos)? {
            b'{' => {
                pos = skip_ws(b, pos + 1);
                let mut found = false;
                while b.get(pos) == Some(&b'"') {
                    let key_start = pos;
                    let key_end = skip_string(b, pos)?;
                    let key: String = serde_json::from_str(&text[key_start..key_end]).ok()?;
                    pos = skip_ws(b, key_end);
                    pos = skip_ws(b, pos + 1); // ':'
                    if key == *seg {
                        best = Some(key_start);
                        found = true;
                        break;
                    }
                    pos = skip_ws(b, skip_value(b, pos)?);
                    if b.get(pos) == Some(&b',') {
                        pos = skip_ws(b, pos + 1);
                    }
                }
                if !found {
                    break;
                }
            }
            b'[' => {
                let index: usize = seg.parse().ok()?;
                pos = skip_ws(b, pos + 1);
                for _ in 0..index {
                    if b.get(pos) == Some(&b']') {
                        return best;
                    }
                    pos = skip_ws(b, skip_value(b, pos)?);
                    if b.get(pos) == Some(&b',') {
                        pos = skip_ws(b, pos + 1);
                    }
                }
                if b.get(pos) == Some(&b']') {
                    break;
                }
                best = Some(pos);
            }
            _ => break,
        }
    }
    best.or(if segments.is_empty() { None } else { Some(0) })
}

fn skip_ws(b: &[u8], mut pos: usize) -> usize {
    while pos < b.len() && b[pos].is_ascii_whitespace() {
        pos += 1;
    }
    pos
}

/// `pos` is on the opening quote; returns the position after the closing quote.
fn skip_string(b: &[u8], mut pos: usize) -> Option<usize> {
    pos += 1;
    while pos < b.len() {
        match b[pos] {
            b'\\' => pos += 2,
            b'"' => return Some(pos + 1),
            _ => pos += 1,
        }
    }
    None
}

/// Returns the position right after the value starting at `pos`.
fn skip_value(b: &[u8], pos: usize) -> Option<usize> {
    match b.get(pos)? {
        b'"' => skip_string(b, pos),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut p = pos;
            while p < b.len() {
                match b[p] {
                    b'"' => {
                        p = skip_string(b, p)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(p + 1);
                        }
                    }
                    _ => {}
                }
                p += 1;
            }
            None
        }
        _ => {
            let mut p = pos;
            while p < b.len() && !matches!(b[p], b',' | b'}' | b']') && !b[p].is_ascii_whitespace()
            {
                p += 1;
            }
            Some(p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_lines_in_toml() {
        let text = "[fleet]\nstate_dir = \"x\"\n\n[[loops]]\nname = \"a\"\n\n[[loops]]\nname = \"b\"\nmax_attempts = \"three\"\n[loops.agent]\nkind = \"command\"\ncommand = [\"a\",\n  \"b\"]\n";
        let loc = Locator::Toml(ImDocument::parse(text.to_string()).unwrap());
        assert_eq!(loc.line("/fleet/state_dir"), Some(2));
        assert_eq!(loc.line("/loops/1/max_attempts"), Some(9));
        assert_eq!(loc.line("/loops/1/agent/kind"), Some(11));
        assert_eq!(loc.line("/loops/1/agent/command/1"), Some(13));
        // A missing key falls back to the deepest part that exists.
        assert_eq!(loc.line("/loops/0/workdir"), Some(4));
        assert_eq!(loc.line("/loops/1/agent/nope"), Some(10));
    }

    #[test]
    fn finds_lines_in_inline_tables() {
        let text = "name = \"a\"\nagent = { kind = \"command\", command = [\n\"x\"] }\nenv = { A = \"1\" }\n";
        let loc = Locator::Toml(ImDocument::parse(text.to_string()).unwrap());
        assert_eq!(loc.line("/agent/command"), Some(2));
        assert_eq!(loc.line("/agent/command/0"), Some(3));
        assert_eq!(loc.line("/env/A"), Some(4));
    }

    #[test]
    fn finds_lines_in_json() {
        let text = "{\n  \"tests\": [\n    {\"id\": \"a\", \"x\": {\"y\": [1, 2]}},\n    {\n      \"id\": \"b\",\n      \"depends_on\": [\n        \"a\",\n        \"c\"\n      ]\n    }\n  ]\n}\n";
        let loc = Locator::Json(text.to_string());
        assert_eq!(loc.line("/tests/0/id"), Some(3));
        assert_eq!(loc.line("/tests/1"), Some(4));
        assert_eq!(loc.line("/tests/1/id"), Some(5));
        assert_eq!(loc.line("/tests/1/depends_on/1"), Some(8));
        assert_eq!(loc.line("/tests/1/verify"), Some(4));
        assert_eq!(loc.line(""), None);
    }

    #[test]
    fn pointer_segments_round_trip() {
        assert_eq!(split_pointer("/a~1b/c~0d"), ["a/b", "c~d"]);
        assert_eq!(escape_segment("a/b~"), "a~1b~0");
    }
}
