//! A loop's tests as a dependency graph in SVG: one column per depth (a test sits right of
//! everything it depends on), nodes coloured by status through `data-status`, and an edge per
//! dependency, marked `blocked` when it is what holds its target back. Dependencies on other
//! loops' tests (`other:ID`) are dashed boxes in the first column.

use std::collections::HashMap;

use loopd_actors::model::TestStatus;
use loopd_actors::view::TestView;
use maud::{html, Markup, PreEscaped};

use super::layout::word;

const W: usize = 170;
const H: usize = 28;
const GAP_X: usize = 60;
const GAP_Y: usize = 12;
const PAD: usize = 16;
/// Characters of an id shown in a node (the whole id is in its tooltip).
const LABEL: usize = 22;

struct Node<'a> {
    id: &'a str,
    column: usize,
    row: usize,
    test: Option<&'a TestView>,
}

/// Each test's depth: 0 without dependencies in the loop, else one more than its deepest
/// dependency (a cycle, refused by validation, is cut where it closes).
fn depths<'a>(tests: &'a [TestView]) -> HashMap<&'a str, usize> {
    let by_id: HashMap<&str, &TestView> = tests.iter().map(|t| (t.id.as_str(), t)).collect();
    let mut done: HashMap<&'a str, usize> = HashMap::new();
    fn visit<'a>(
        id: &'a str,
        by_id: &HashMap<&str, &'a TestView>,
        done: &mut HashMap<&'a str, usize>,
        path: &mut Vec<&'a str>,
    ) -> usize {
        if let Some(d) = done.get(id) {
            return *d;
        }
        if path.contains(&id) {
            return 0;
        }
        let Some(t) = by_id.get(id) else {
            return 0;
        };
        path.push(id);
        let d = t
            .depends_on
            .iter()
            .filter(|d| by_id.contains_key(d.as_str()))
            .map(|d| visit(d.as_str(), by_id, done, path) + 1)
            .max()
            .unwrap_or(0);
        path.pop();
        done.insert(id, d);
        d
    }
    for t in tests {
        visit(t.id.as_str(), &by_id, &mut done, &mut Vec::new());
    }
    done
}

/// Whether the edge `from -> to` holds `to` back.
fn holds_back(from: Option<&TestView>, to: &TestView) -> bool {
    let released = from.is_some_and(|f| f.status.releases_dependents());
    !released
        && (to.status == TestStatus::Blocked
            || to
                .blocked_by
                .iter()
                .any(|b| Some(b.as_str()) == from.map(|f| f.id.as_str())))
}

/// `svg#graph` of `tests` (removed ones left out).
pub fn svg(loop_name: &str, tests: &[TestView]) -> Markup {
    let tests: Vec<TestView> = tests
        .iter()
        .filter(|t| t.status != TestStatus::Removed)
        .cloned()
        .collect();
    let by_id: HashMap<&str, &TestView> = tests.iter().map(|t| (t.id.as_str(), t)).collect();
    let depth = depths(&tests);
    let mut external: Vec<&str> = tests
        .iter()
        .flat_map(|t| t.depends_on.iter())
        .filter(|d| !by_id.contains_key(d.as_str()))
        .map(String::as_str)
        .collect();
    external.sort();
    external.dedup();
    let shift = usize::from(!external.is_empty());
    let mut rows_in: HashMap<usize, usize> = HashMap::new();
    let mut nodes: Vec<Node> = Vec::new();
    for id in &external {
        let row = rows_in.entry(0).or_default();
        nodes.push(Node {
            id,
            column: 0,
            row: *row,
            test: None,
        });
        *row += 1;
    }
    for t in &tests {
        let column = depth.get(t.id.as_str()).copied().unwrap_or(0) + shift;
        let row = rows_in.entry(column).or_default();
        nodes.push(Node {
            id: &t.id,
            column,
            row: *row,
            test: Some(t),
        });
        *row += 1;
    }
    let columns = nodes.iter().map(|n| n.column + 1).max().unwrap_or(1);
    let rows = rows_in.values().copied().max().unwrap_or(1);
    let width = PAD * 2 + columns * W + (columns - 1) * GAP_X;
    let height = PAD * 2 + rows * H + rows.saturating_sub(1) * GAP_Y;
    let at: HashMap<&str, (usize, usize)> = nodes
        .iter()
        .map(|n| {
            (
                n.id,
                (PAD + n.column * (W + GAP_X), PAD + n.row * (H + GAP_Y)),
            )
        })
        .collect();
    let mut edges = String::new();
    for t in &tests {
        for d in &t.depends_on {
            let (Some(&(x1, y1)), Some(&(x2, y2))) = (at.get(d.as_str()), at.get(t.id.as_str()))
            else {
                continue;
            };
            let blocked = holds_back(by_id.get(d.as_str()).copied(), t);
            let (sx, sy, ex, ey) = (x1 + W, y1 + H / 2, x2, y2 + H / 2);
            let mid = (sx + ex) / 2;
            edges.push_str(
                &html! {
                    path.edge.blocked[blocked] data-edge=(format!("{d}->{}", t.id))
                        d=(format!("M{sx},{sy} C{mid},{sy} {mid},{ey} {ex},{ey}")) {}
                }
                .into_string(),
            );
        }
    }
    html! {
        svg #graph xmlns="http://www.w3.org/2000/svg" role="img"
            aria-label=(format!("dependency graph of the tests of {loop_name}"))
            width=(width) height=(height) viewBox=(format!("0 0 {width} {height}")) {
            g.edges { (PreEscaped(edges)) }
            @for n in &nodes {
                @let (x, y) = at[n.id];
                @if let Some(t) = n.test {
                    @let status = word(t.status);
                    a href=(format!("#test-{}", t.id)) {
                        g.node data-test=(t.id) data-status=(status) {
                            title { (t.id) ": " (t.title) " (" (status) ")" }
                            rect x=(x) y=(y) width=(W) height=(H) rx="4" {}
                            text x=(x + 8) y=(y + H / 2 + 4) { (short(&t.id)) }
                        }
                    }
                } @else {
                    g.ext data-test=(n.id) {
                        title { (n.id) " (another loop's test)" }
                        rect x=(x) y=(y) width=(W) height=(H) rx="4" {}
                        text x=(x + 8) y=(y + H / 2 + 4) { (short(n.id)) }
                    }
                }
            }
        }
    }
}

fn short(id: &str) -> String {
    if id.chars().count() <= LABEL {
        id.to_string()
    } else {
        let cut: String = id.chars().take(LABEL - 1).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test(id: &str, status: TestStatus, deps: &[&str]) -> TestView {
        TestView {
            id: id.into(),
            title: format!("title of {id}"),
            status,
            reason: None,
            blocked_by: Vec::new(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            counted_attempts: 0,
            commit: None,
            diagnosis: None,
            heal_strategy: None,
            hint: None,
            attempts: Vec::new(),
        }
    }

    #[test]
    fn edges_that_hold_their_target_back_are_marked() {
        let mut blocked = test("C", TestStatus::Blocked, &["B"]);
        blocked.blocked_by = vec!["B".into()];
        let tests = vec![
            test("A", TestStatus::Passed, &[]),
            test("B", TestStatus::Failed, &["A"]),
            blocked,
            test("D", TestStatus::Pending, &["A", "other:X"]),
        ];
        let svg = svg("l", &tests).into_string();
        assert!(
            svg.contains(r#"class="edge blocked" data-edge="B-&gt;C""#),
            "{svg}"
        );
        assert!(svg.contains(r#"class="edge" data-edge="A-&gt;B""#), "{svg}");
        assert!(svg.contains(r#"data-edge="other:X-&gt;D""#), "{svg}");
        assert!(
            svg.contains(r#"<g class="node" data-test="C" data-status="blocked">"#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"<g class="ext" data-test="other:X">"#),
            "{svg}"
        );
    }

    #[test]
    fn a_test_sits_right_of_its_dependencies() {
        let tests = vec![
            test("A", TestStatus::Passed, &[]),
            test("B", TestStatus::Pending, &["A"]),
            test("C", TestStatus::Pending, &["B", "A"]),
        ];
        let d = depths(&tests);
        assert_eq!((d["A"], d["B"], d["C"]), (0, 1, 2));
    }
}
