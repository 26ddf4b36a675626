//! The SVG drawing of a plan (`medic plan export --format svg`, and inside the HTML export).
//!
//! The plan is a tree in execution order plus requirement edges, so the layout is simple and
//! deterministic (no layout crate draws nested groups; see the commit that added this file):
//!
//! 1. Each phase takes one row, top to bottom in plan order, indented by its depth.
//! 2. A group is a box around its own row and the rows of everything under it.
//! 3. Each direct requirement is an arc on the right, from the requirement to the phase; the
//!    longer the span, the wider the arc, so arcs nest instead of overlapping.
//! 4. Every phase is one `<g class="phase …">` element coloured by its state; all text is
//!    XML-escaped, so no phase ID or description can become markup.

use std::fmt::Write as _;

use super::Export;
use crate::render::table::NodeRow;

/// State → (fill, stroke), shared with the Mermaid classes.
pub(super) const STATE_COLOURS: [(&str, &str, &str); 6] = [
    ("unstarted", "#f5f5f5", "#9e9e9e"),
    ("in_progress", "#b3e5fc", "#0277bd"),
    ("completed", "#c8e6c9", "#2e7d32"),
    ("failed", "#ffcdd2", "#c62828"),
    ("rolled_back", "#e1bee7", "#6a1b9a"),
    ("interrupted", "#ffe0b2", "#ef6c00"),
];

const ROW: f64 = 48.0;
const INDENT: f64 = 18.0;
const MARGIN: f64 = 12.0;
const CHAR: f64 = 7.2;
/// The longest description drawn; the full text is in the element's `<title>`.
const DESCRIPTION_CHARS: usize = 70;

fn colours(state: &str) -> (&'static str, &'static str) {
    STATE_COLOURS
        .iter()
        .find(|(s, _, _)| *s == state)
        .map(|(_, f, s)| (*f, *s))
        .unwrap_or(("#ffffff", "#000000"))
}

impl Export<'_> {
    /// The drawing as a standalone SVG document.
    pub(crate) fn to_svg(&self) -> String {
        let plan = self.view.plan;
        let rows = self.view.node_rows();
        let n = plan.len();
        // Every requirement edge, as (from, to) plan indices.
        let edges: Vec<(usize, usize)> = (1..n)
            .flat_map(|i| {
                plan.direct_requirements(i)
                    .into_iter()
                    .filter(|r| *r != 0)
                    .map(move |r| (r, i))
            })
            .collect();
        let text_width = rows
            .iter()
            .skip(1)
            .map(|r| {
                let desc = r.description.chars().count().min(DESCRIPTION_CHARS);
                r.depth as f64 * INDENT
                    + (r.id.chars().count() + r.state.len() + 4).max(desc) as f64 * CHAR
            })
            .fold(240.0, f64::max);
        let right = MARGIN + text_width + INDENT;
        let max_span = edges.iter().map(|(a, b)| b.abs_diff(*a)).max().unwrap_or(0);
        let width = right + arc_reach(max_span) + MARGIN;
        let height = MARGIN * 2.0 + (n.saturating_sub(1)) as f64 * ROW;
        let top = |i: usize| MARGIN + (i - 1) as f64 * ROW;
        // Boxes: nested groups are inset on both sides, so a child sits inside its parent.
        let left = |i: usize| MARGIN + (rows[i].depth - 1) as f64 * INDENT;
        let right_of = |i: usize| right - (rows[i].depth - 1) as f64 * (INDENT / 2.0);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"medic-plan\" width=\"{width:.0}\" \
             height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"monospace\" \
             font-size=\"12\" role=\"img\" aria-label=\"plan of operation {}\">",
            escape(&self.view.operation.id)
        );
        out.push_str(
            "<defs><marker id=\"medic-arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" \
             markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\">\
             <path d=\"M0,0 L10,5 L0,10 z\" fill=\"#555\"/></marker></defs>\n",
        );
        for (i, row) in rows.iter().enumerate().skip(1) {
            let leaf = plan.node(i).is_leaf();
            let last = plan.subtree(i).end - 1;
            let (x, y) = (left(i), top(i) + 4.0);
            let w = right_of(i) - x;
            // A group's bottom edge sits a little below its deepest descendant's, so nested
            // boxes that end on the same row stay apart.
            let below = plan
                .subtree(i)
                .map(|d| rows[d].depth - rows[i].depth)
                .max()
                .unwrap_or(0)
                .min(3) as f64;
            let h = top(last) + ROW - 4.0 + below * 2.5 - y;
            draw_phase(&mut out, row, leaf, Rect { x, y, w, h });
        }
        for (from, to) in &edges {
            let (x1, y1) = (right_of(*from), top(*from) + ROW / 2.0);
            let (x2, y2) = (right_of(*to), top(*to) + ROW / 2.0);
            let reach = arc_reach(to.abs_diff(*from));
            let _ = writeln!(
                out,
                "<path class=\"requires\" data-from=\"{}\" data-to=\"{}\" d=\"M{x1:.1},{y1:.1} \
                 C{:.1},{y1:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}\" fill=\"none\" stroke=\"#555\" \
                 marker-end=\"url(#medic-arrow)\"/>",
                escape(&rows[*from].id),
                escape(&rows[*to].id),
                x1 + reach,
                x2 + reach,
            );
        }
        out.push_str("</svg>\n");
        out
    }
}

/// A box on the drawing.
struct Rect {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

/// One phase: a `<g>` with its tooltip, box, ID, state and shortened description.
fn draw_phase(out: &mut String, row: &NodeRow, leaf: bool, r: Rect) {
    let Rect { x, y, w, h } = r;
    let (fill, stroke) = colours(&row.state);
    let kind = if leaf { "leaf" } else { "group" };
    let _ = writeln!(
        out,
        "<g class=\"phase {kind} state-{state}\" data-phase=\"{id}\" data-state=\"{state}\">\
         <title>{id} — {state}{desc}</title>\
         <rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" rx=\"6\" \
         fill=\"{fill}\" fill-opacity=\"{opacity}\" stroke=\"{stroke}\"/>\
         <text x=\"{tx:.1}\" y=\"{ty:.1}\" font-weight=\"bold\">{id}</text>\
         <text x=\"{sx:.1}\" y=\"{ty:.1}\" text-anchor=\"end\" fill=\"{stroke}\">{state}</text>\
         <text x=\"{tx:.1}\" y=\"{dy:.1}\" fill=\"#555\" font-size=\"11\">{short}</text></g>",
        state = escape(&row.state),
        id = escape(&row.id),
        desc = if row.description.is_empty() {
            String::new()
        } else {
            format!(" — {}", escape(&row.description))
        },
        opacity = if leaf { "1" } else { "0.35" },
        tx = x + 8.0,
        ty = y + 15.0,
        sx = x + w - 8.0,
        dy = y + 30.0,
        short = escape(&shorten(&row.description)),
    );
}

/// How far right an arc spanning `span` rows reaches.
fn arc_reach(span: usize) -> f64 {
    16.0 + 10.0 * span.min(40) as f64
}

fn shorten(description: &str) -> String {
    let one_line = description.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > DESCRIPTION_CHARS {
        let mut s: String = one_line.chars().take(DESCRIPTION_CHARS - 1).collect();
        s.push('…');
        s
    } else {
        one_line
    }
}

/// Text safe in XML and HTML content and in quoted attributes.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters are not allowed in XML 1.0; tab and newline read as spaces.
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escaped_text_has_no_markup() {
        let e = escape("<script>alert('x')</script> \"--> &\u{1b}");
        for bad in ['<', '>', '"', '\'', '\u{1b}'] {
            assert!(!e.contains(bad), "{bad:?} in {e}");
        }
    }
}
