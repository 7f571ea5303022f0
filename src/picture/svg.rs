//! SVG drawings for the HTML report, laid out here so that they show with no script: the
//! pipeline's chain left to right, and a run's timeline.

use std::fmt::Write as _;

use super::timeline::{Ending, Timeline};
use super::{Link, PipelinePicture, xml_text};
use crate::lifecycle::ModeKind;

const STAGE_W: u32 = 130;
const STAGE_H: u32 = 30;
const COLUMN: u32 = STAGE_W + 30;
const ROW: u32 = STAGE_H + 14;
const GAP: u32 = 80;
const MARGIN: u32 = 20;
const CHAR_W: u32 = 7;

/// The width text of `chars` characters takes in the drawings' 12px sans-serif, roughly.
fn text_width(text: &str) -> u32 {
    text.chars().count() as u32 * CHAR_W
}

/// Where a step's stages go: each stage's column (its depth among the step's own stages,
/// finally stages in a column of their own after them) and row.
fn step_layout(
    picture: &PipelinePicture<'_>,
    step: crate::lifecycle::Step,
) -> Vec<(usize, u32, u32)> {
    let graph = picture.graph;
    let mut depth = vec![0u32; graph.len()];
    let mut placed = Vec::new();
    let mut ordinary_columns = 0;
    // Topological order: every dependency's depth is known before its dependents'.
    for spec in graph.topological_order() {
        let Some(i) = graph.index_of(spec.id.as_str()) else {
            continue;
        };
        if graph.step_of(i) != step || graph.is_finally(i) {
            continue;
        }
        depth[i] = graph
            .deps_of(i)
            .iter()
            .map(|&d| d as usize)
            .filter(|&d| graph.step_of(d) == step && !graph.is_finally(d))
            .map(|d| depth[d] + 1)
            .max()
            .unwrap_or(0);
        ordinary_columns = ordinary_columns.max(depth[i] + 1);
        placed.push(i);
    }
    let mut rows = vec![0u32; ordinary_columns as usize + 1];
    let mut layout = Vec::with_capacity(placed.len());
    placed.sort_unstable();
    for i in placed {
        let column = depth[i];
        layout.push((i, column, rows[column as usize]));
        rows[column as usize] += 1;
    }
    for i in picture.members(step).filter(|&i| graph.is_finally(i)) {
        let column = ordinary_columns;
        layout.push((i, column, rows[column as usize]));
        rows[column as usize] += 1;
    }
    layout
}

/// The pipeline's chain as SVG.
pub(super) fn pipeline(picture: &PipelinePicture<'_>) -> String {
    let chain = picture.chain();
    // First pass: each link's size.
    let mut sizes = Vec::with_capacity(chain.len());
    let mut layouts = Vec::with_capacity(chain.len());
    for (link, _) in &chain {
        let (size, layout) = match *link {
            Link::Commit | Link::Deployed => ((44, 44), Vec::new()),
            Link::Gate(_, _, name) => ((text_width(name).max(44) + 10, 70), Vec::new()),
            Link::Approval => ((text_width(&picture.approval_label()) + 60, 50), Vec::new()),
            Link::Step(step) => {
                let layout = step_layout(picture, step);
                if layout.is_empty() {
                    let title = format!("{} (no stages)", picture.step_title(step));
                    ((text_width(&title) + 20, 40), layout)
                } else {
                    let columns = layout.iter().map(|l| l.1).max().unwrap_or(0) + 1;
                    let rows = layout.iter().map(|l| l.2).max().unwrap_or(0) + 1;
                    let title = text_width(&picture.step_title(step)) + 20;
                    ((title.max(columns * COLUMN - 10), rows * ROW + 36), layout)
                }
            }
        };
        sizes.push(size);
        layouts.push(layout);
    }
    let height = sizes.iter().map(|s| s.1).max().unwrap_or(0) + 2 * MARGIN + 20;
    let mid = height / 2;
    let mut x = MARGIN;
    let mut lefts = Vec::with_capacity(chain.len());
    for &(w, _) in &sizes {
        lefts.push(x);
        x += w + GAP;
    }
    let width = x - GAP + MARGIN;
    let mut stage_at = vec![None::<(u32, u32)>; picture.graph.len()];
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"pipeline\" width=\"{width}\" height=\"{height}\" style=\"max-width: 100%; height: auto\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\" role=\"img\">\
         <title>{}</title>\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" \
         markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\"/></marker></defs>",
        xml_text(&picture.title())
    );
    for (k, (link, _)) in chain.iter().enumerate() {
        let (w, h) = sizes[k];
        let place = Place {
            left: lefts[k],
            top: mid - h / 2,
            w,
            h,
            mid,
        };
        draw_link(&mut out, picture, *link, &place, &layouts[k], &mut stage_at);
    }
    // The chain's arrows, each labelled with the state the release reaches.
    for k in 0..chain.len().saturating_sub(1) {
        let from = lefts[k] + sizes[k].0;
        let to = lefts[k + 1];
        let _ = write!(
            out,
            "<line class=\"chain\" x1=\"{from}\" y1=\"{mid}\" x2=\"{to}\" y2=\"{mid}\" stroke=\"#263238\" \
             stroke-width=\"2\" marker-end=\"url(#arrow)\"/>"
        );
        if let Some(state) = chain[k].1 {
            let _ = write!(
                out,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#263238\" font-style=\"italic\">{state}</text>",
                u32::midpoint(from, to),
                mid - 6
            );
        }
    }
    // Dependencies between stages.
    for stage in 0..picture.graph.len() {
        let Some((tx, ty)) = stage_at[stage] else {
            continue;
        };
        for &dependency in picture.graph.deps_of(stage) {
            if let Some((fx, fy)) = stage_at[dependency as usize] {
                let _ = write!(
                    out,
                    "<line class=\"dependency\" x1=\"{}\" y1=\"{}\" x2=\"{tx}\" y2=\"{}\" stroke=\"#78909c\" \
                     marker-end=\"url(#arrow)\"/>",
                    fx + STAGE_W,
                    fy + STAGE_H / 2,
                    ty + STAGE_H / 2
                );
            }
        }
    }
    out.push_str("</svg>");
    out
}

/// Where a link of the chain is drawn: its box and the chain's middle line.
#[derive(Clone, Copy)]
struct Place {
    left: u32,
    top: u32,
    w: u32,
    h: u32,
    mid: u32,
}

/// Draws one link of the chain at `place`, noting where each of a step's stages went.
fn draw_link(
    out: &mut String,
    picture: &PipelinePicture<'_>,
    link: Link<'_>,
    place: &Place,
    layout: &[(usize, u32, u32)],
    stage_at: &mut [Option<(u32, u32)>],
) {
    let Place {
        left,
        top,
        w,
        h,
        mid,
    } = *place;
    match link {
        Link::Commit => {
            let _ = write!(
                out,
                "<g class=\"commit\"><circle cx=\"{}\" cy=\"{mid}\" r=\"20\" fill=\"#e3f2fd\" stroke=\"#1565c0\"/>\
                 <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"10\">commit</text></g>",
                left + 22,
                left + 22,
                mid + 4
            );
        }
        Link::Deployed => {
            let cx = left + 22;
            let _ = write!(
                out,
                "<g class=\"deployed\"><circle cx=\"{cx}\" cy=\"{mid}\" r=\"22\" fill=\"#e8f5e9\" stroke=\"#2e7d32\"/>\
                 <circle cx=\"{cx}\" cy=\"{mid}\" r=\"18\" fill=\"none\" stroke=\"#2e7d32\"/>\
                 <text x=\"{cx}\" y=\"{}\" text-anchor=\"middle\" font-size=\"10\">deployed</text></g>",
                mid + 4
            );
        }
        Link::Gate(_, _, name) => {
            let cx = left + w / 2;
            let _ = write!(
                out,
                "<g class=\"gate\"><polygon points=\"{cx},{} {},{mid} {cx},{} {},{mid}\" fill=\"#fff8e1\" stroke=\"#f9a825\"/>\
                 <text x=\"{cx}\" y=\"{}\" text-anchor=\"middle\">{}</text></g>",
                mid - 20,
                cx + 22,
                mid + 20,
                cx - 22,
                mid + 36,
                xml_text(name)
            );
        }
        Link::Approval => {
            // The drawing draws its own person (or gear) instead of the label's emoji, which
            // needs a font the viewer may lack.
            let label = picture.approval_label();
            let label = xml_text(label.trim_start_matches(['\u{1F464}', '\u{2699}', ' ']));
            let (right, bottom) = (left + w, top + h);
            let (class, points, fill) = match picture.mode {
                // ISO 5807's manual operation: a trapezoid, wide side up.
                ModeKind::Delivery => (
                    "approval button",
                    format!(
                        "{left},{top} {right},{top} {},{bottom} {},{bottom}",
                        right - 14,
                        left + 14
                    ),
                    "#fce4ec",
                ),
                ModeKind::Deployment => (
                    "approval automatic",
                    format!(
                        "{},{top} {},{top} {right},{mid} {},{bottom} {},{bottom} {left},{mid}",
                        left + 14,
                        right - 14,
                        right - 14,
                        left + 14
                    ),
                    "#ede7f6",
                ),
            };
            let _ = write!(
                out,
                "<g class=\"{class}\"><polygon points=\"{points}\" fill=\"{fill}\" stroke=\"#555\"/>\
                 {}<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{label}</text></g>",
                icon(picture.mode, left + 26, mid),
                left + w / 2 + 12,
                mid + 4
            );
        }
        Link::Step(step) => draw_step(out, picture, step, place, layout, stage_at),
    }
}

/// Draws a step: its box, titled, and its stages in their columns and rows.
fn draw_step(
    out: &mut String,
    picture: &PipelinePicture<'_>,
    step: crate::lifecycle::Step,
    place: &Place,
    layout: &[(usize, u32, u32)],
    stage_at: &mut [Option<(u32, u32)>],
) {
    let Place {
        left,
        top,
        w,
        h,
        mid,
    } = *place;
    let title = xml_text(&picture.step_title(step));
    if layout.is_empty() {
        let _ = write!(
            out,
            "<g class=\"step empty\"><rect x=\"{left}\" y=\"{top}\" width=\"{w}\" height=\"{h}\" rx=\"6\" \
             fill=\"none\" stroke=\"#999\" stroke-dasharray=\"2 3\"/>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{title} (no stages)</text></g>",
            left + w / 2,
            mid + 4
        );
        return;
    }
    let _ = write!(
        out,
        "<g class=\"step\" data-step=\"{step}\"><rect x=\"{left}\" y=\"{top}\" width=\"{w}\" height=\"{h}\" rx=\"8\" \
         fill=\"#fafafa\" stroke=\"#90a4ae\"/><text x=\"{}\" y=\"{}\" font-weight=\"bold\">{title}</text>",
        left + 10,
        top + 18
    );
    for &(i, column, row) in layout {
        let (sx, sy) = (left + 10 + column * COLUMN, top + 30 + row * ROW);
        stage_at[i] = Some((sx, sy));
        let id = xml_text(picture.graph.spec(i).id.as_str());
        let finally = picture.graph.is_finally(i);
        let dash = if finally {
            " stroke-dasharray=\"5 4\""
        } else {
            ""
        };
        let label = if finally {
            format!("{id} (finally)")
        } else {
            id
        };
        let _ = write!(
            out,
            "<g class=\"stage{}\"><rect x=\"{sx}\" y=\"{sy}\" width=\"{STAGE_W}\" height=\"{STAGE_H}\" rx=\"4\" \
             fill=\"#fff\" stroke=\"#37474f\"{dash}/><text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{label}</text></g>",
            if finally { " finally" } else { "" },
            sx + STAGE_W / 2,
            sy + STAGE_H / 2 + 4
        );
    }
    out.push_str("</g>");
}

/// A small person (the button: someone decides) or a gear (the gates decide) centred at
/// `(x, y)`.
fn icon(mode: ModeKind, x: u32, y: u32) -> String {
    match mode {
        ModeKind::Delivery => format!(
            "<g class=\"person\" fill=\"none\" stroke=\"#ad1457\" stroke-width=\"2\">\
             <circle cx=\"{x}\" cy=\"{}\" r=\"4\"/><path d=\"M{},{} L{x},{} L{},{} M{x},{} L{x},{} M{},{} L{},{}\"/></g>",
            y - 9,
            x - 6,
            y + 12,
            y + 3,
            x + 6,
            y + 12,
            y - 5,
            y + 3,
            x - 6,
            y - 1,
            x + 6,
            y - 1
        ),
        ModeKind::Deployment => format!(
            "<g class=\"gear\" fill=\"none\" stroke=\"#4527a0\" stroke-width=\"3\">\
             <circle cx=\"{x}\" cy=\"{y}\" r=\"6\"/><circle cx=\"{x}\" cy=\"{y}\" r=\"10\" stroke-dasharray=\"4 3\"/></g>"
        ),
    }
}

/// A run's timeline as SVG: a row per bar (an attempt of a stage, a wait), grouped by
/// section, and the release's marks as labelled ticks above them.
pub(super) fn timeline(timeline: &Timeline) -> String {
    const LABEL: u32 = 240;
    const PLOT: u32 = 700;
    const LINE: u32 = 20;
    let Some((t0, t1)) = timeline.span() else {
        return "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline\" width=\"300\" height=\"30\">\
                <text x=\"10\" y=\"20\" font-family=\"sans-serif\" font-size=\"12\">no events</text></svg>"
            .to_owned();
    };
    let span = (t1.as_millis() - t0.as_millis()).max(1);
    let x = |t: crate::time::Timestamp| -> u64 {
        u64::from(LABEL) + (t.as_millis() - t0.as_millis()) * u64::from(PLOT) / span
    };
    let rows = timeline.marks.len() + timeline.bars.len();
    let height = (rows as u32 + 2) * LINE + 2 * MARGIN;
    let width = LABEL + PLOT + 2 * MARGIN + 120;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\" role=\"img\">"
    );
    let mut y = MARGIN;
    for mark in &timeline.marks {
        let mx = x(mark.at);
        let _ = write!(
            out,
            "<g class=\"mark\"><line x1=\"{mx}\" y1=\"{y}\" x2=\"{mx}\" y2=\"{}\" stroke=\"#b0bec5\" stroke-dasharray=\"3 3\"/>\
             <polygon points=\"{mx},{y} {},{} {mx},{} {},{}\" fill=\"#455a64\"/>\
             <text x=\"{}\" y=\"{}\">{}</text></g>",
            height - MARGIN - LINE,
            mx + 6,
            y + 6,
            y + 12,
            mx - 6,
            y + 6,
            mx + 10,
            y + 11,
            xml_text(&mark.label)
        );
        y += LINE;
    }
    for bar in &timeline.bars {
        let (bx, ex) = (x(bar.start), x(bar.end));
        let fill = match (bar.ending, bar.section.as_str()) {
            (_, "release") => "#ffb300",
            (Ending::Succeeded, _) => "#43a047",
            (Ending::Failed, _) => "#e53935",
            (Ending::Other, _) => "#9e9e9e",
        };
        let _ = write!(
            out,
            "<g class=\"bar\"><text x=\"{}\" y=\"{}\">{} · {}</text>\
             <rect x=\"{bx}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{fill}\" rx=\"2\"/></g>",
            MARGIN,
            y + 13,
            xml_text(&bar.section),
            xml_text(&bar.label),
            y + 3,
            (ex - bx).max(2),
            LINE - 6
        );
        y += LINE;
    }
    // The axis: the span's start and end, in seconds since the first instant.
    let axis = y + 4;
    let _ = write!(
        out,
        "<line x1=\"{LABEL}\" y1=\"{axis}\" x2=\"{}\" y2=\"{axis}\" stroke=\"#607d8b\"/>",
        LABEL + PLOT
    );
    for quarter in 0..=4u64 {
        let t = span * quarter / 4;
        let tx = u64::from(LABEL) + u64::from(PLOT) * quarter / 4;
        #[allow(clippy::cast_precision_loss)] // A label: milliseconds to seconds, rounded.
        let label = if span < 10_000 {
            format!("+{t}ms")
        } else {
            format!("+{:.1}s", t as f64 / 1000.0)
        };
        let _ = write!(
            out,
            "<text x=\"{tx}\" y=\"{}\" text-anchor=\"middle\" fill=\"#607d8b\">{label}</text>",
            axis + 15
        );
    }
    out.push_str("</svg>");
    out
}
