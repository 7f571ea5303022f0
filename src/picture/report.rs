//! The HTML report of a run: one file, no server, no network.

use std::fmt::Write as _;

use super::timeline::Timeline;
use super::{PipelinePicture, gantt, svg, xml_text};
use crate::engine::Event;
use crate::executor::Stream;
use crate::record::AnyRelease;

/// A self-contained HTML page about one run of `release` through the pipeline drawn by
/// `picture`: the pipeline (inline SVG), the run's timeline from `events` (inline SVG), who
/// approved and why, every gate verdict, every stage's log, and the events themselves; the
/// Mermaid and DOT sources ride along for pasting elsewhere.
///
/// The page loads nothing: its content security policy allows no fetch, image or font from
/// anywhere, and its pictures are drawn by tollgate, not by a script. Its one inline script
/// counts what rendered and sets `data-rendered="ok"` on the `<html>` element (or
/// `"error"` when a script error happened), which a headless browser can check. Every text
/// from a host (logs, reasons, names) is escaped.
///
/// ```
/// use futures::executor::block_on;
/// use tollgate::engine::{Engine, EventLog};
/// use tollgate::executor::from_fn;
/// use tollgate::prelude::*;
///
/// # fn main() -> Result<(), Error> { block_on(async {
/// let events = EventLog::new();
/// let pipeline = Pipeline::<Deployment>::builder("shop")
///     .engine(Engine::builder().observer(events.clone()).build()?)
///     .stage(Stage::build("compile").run(from_fn(|_| {
///         let artifact = ArtifactRef::from_bytes("shop-api", b"<binary>");
///         Ok(StageOutcome::success().log("built <shop-api>").artifact(artifact))
///     })))
///     .stage(Stage::test("unit").after("compile").run(from_fn(|_| Ok(StageOutcome::success()))))
///     .stage(Stage::stage("staging").run(from_fn(|_| Ok(StageOutcome::success()))))
///     .stage(Stage::deploy("production").run(from_fn(|_| Ok(StageOutcome::success()))))
///     .build()?;
/// let built = pipeline.start("shop-1", Revision::new("4f2a9c1", "dana")?)?.build(&pipeline).await?;
///
/// let html = tollgate::picture::html_report(&pipeline.picture(), built.record(), &events.events());
/// assert!(html.starts_with("<!DOCTYPE html>"));
/// assert!(html.contains("built &lt;shop-api&gt;"));     // the log, escaped
/// assert!(!html.contains("src=\"http"));               // nothing to fetch
/// # Ok(()) }) }
/// ```
#[must_use]
pub fn html_report(
    picture: &PipelinePicture<'_>,
    release: &AnyRelease,
    events: &[Event],
) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let title = format!("{} · {}", release.id(), picture.title());
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\" data-rendered=\"no\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        xml_text(&title)
    );
    let _ = writeln!(out, "<h1>{}</h1>", xml_text(&title));
    summary(&mut out, release);

    out.push_str("<h2>Pipeline</h2>\n<figure>");
    out.push_str(&picture.to_svg());
    out.push_str("</figure>\n");

    out.push_str("<h2>Timeline</h2>\n<figure>");
    out.push_str(&svg::timeline(&Timeline::read(events)));
    out.push_str("</figure>\n");

    verdicts_and_logs(&mut out, release);

    out.push_str("<h2>Events</h2>\n<ol class=\"events\">\n");
    for event in events {
        let _ = writeln!(out, "<li>{}</li>", xml_text(&event.to_string()));
    }
    out.push_str("</ol>\n");

    out.push_str("<h2>Sources</h2>\n<details><summary>Mermaid: pipeline</summary><pre>");
    out.push_str(&xml_text(&picture.to_mermaid()));
    out.push_str("</pre></details>\n<details><summary>Mermaid: timeline</summary><pre>");
    out.push_str(&xml_text(&gantt(events)));
    out.push_str("</pre></details>\n<details><summary>Graphviz DOT: pipeline</summary><pre>");
    out.push_str(&xml_text(&picture.to_dot()));
    out.push_str("</pre></details>\n");

    let _ = write!(
        out,
        "<p id=\"rendered\">not checked</p>\n<script>{SCRIPT}</script>\n</body>\n</html>\n"
    );
    out
}

/// Where the release is, what it carries, who decided.
fn summary(out: &mut String, release: &AnyRelease) {
    // The summary: where the release is, what it carries, who decided.
    out.push_str("<table class=\"summary\">\n");
    row(out, "release", release.id().as_str());
    row(out, "state", release.state().as_str());
    row(out, "mode", &release.mode().to_string());
    let revision = release.revision();
    row(
        out,
        "revision",
        &format!("{} by {}", revision.id, revision.author),
    );
    if let Some(message) = &revision.message {
        row(out, "message", message);
    }
    if let Some(artifact) = release.artifact() {
        row(
            out,
            "artifact",
            &format!("{} {}", artifact.name, artifact.digest),
        );
    }
    let approval = match release.approval() {
        Some(record) => {
            let people: Vec<String> = if record.signoffs.is_empty() {
                vec![record.approver.to_string()]
            } else {
                record
                    .signoffs
                    .iter()
                    .map(|s| format!("{} ({})", s.person, s.reason))
                    .collect()
            };
            format!("by {} at {}", people.join(", "), record.issued_at)
        }
        None if release.state() >= crate::lifecycle::StateName::Approved => {
            "by the automated gates (no person)".to_owned()
        }
        None => "not yet".to_owned(),
    };
    out.push_str("<tr><th>approved</th><td id=\"approved-by\">");
    out.push_str(&xml_text(&approval));
    out.push_str("</td></tr>\n");
    out.push_str("</table>\n");
}

/// The gate verdicts and every stage's log, step by step.
fn verdicts_and_logs(out: &mut String, release: &AnyRelease) {
    out.push_str("<h2>Gate verdicts</h2>\n");
    if release.gates().is_empty() {
        out.push_str("<p>No gate guarded a move.</p>\n");
    } else {
        out.push_str("<table class=\"gates\"><tr><th>when</th><th>move</th><th>gate</th><th>verdict</th></tr>\n");
        for gate in release.gates() {
            let class = if gate.verdict.is_open() {
                "open"
            } else {
                "blocked"
            };
            let _ = writeln!(
                out,
                "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                gate.at,
                gate.mv,
                xml_text(&gate.gate),
                xml_text(&gate.verdict.to_string())
            );
        }
        out.push_str("</table>\n");
    }

    out.push_str("<h2>Stage logs</h2>\n");
    for step in release.steps() {
        let _ = writeln!(
            out,
            "<h3>{} step ({}, {} to {})</h3>",
            step.step,
            if step.succeeded() {
                "succeeded"
            } else {
                "failed"
            },
            step.started_at,
            step.finished_at
        );
        for stage in &step.stages {
            let _ = write!(
                out,
                "<details class=\"stage\" open><summary>{}: {} after {} attempt(s)</summary><pre>",
                xml_text(stage.id.as_str()),
                xml_text(&stage.status.to_string()),
                stage.attempts().len()
            );
            for line in &stage.logs {
                let stream = match line.stream {
                    Stream::Stdout => "out",
                    Stream::Stderr => "err",
                };
                let _ = writeln!(
                    out,
                    "<span class=\"{stream}\">{}</span>",
                    xml_text(&line.text)
                );
            }
            out.push_str("</pre></details>\n");
        }
    }
}

fn row(out: &mut String, name: &str, value: &str) {
    let _ = writeln!(out, "<tr><th>{name}</th><td>{}</td></tr>", xml_text(value));
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#212121}\
table{border-collapse:collapse}th,td{text-align:left;padding:2px 10px;border-bottom:1px solid #eee}\
tr.blocked td{color:#c62828}figure{margin:0;overflow-x:auto}pre{background:#f5f5f5;padding:6px}\
pre .err{color:#c62828}ol.events{font-family:monospace;font-size:12px}";

/// The page's one script: counts the drawings and their parts, and says so on the page and
/// on the `<html>` element (`data-rendered`), or says that a script error happened.
const SCRIPT: &str = "(function(){\
var root=document.documentElement;\
window.addEventListener('error',function(){root.dataset.rendered='error';});\
var pictures=document.querySelectorAll('figure > svg');\
var stages=document.querySelectorAll('svg.pipeline g.stage').length;\
var bars=document.querySelectorAll('svg.timeline g.bar').length;\
var drawn=0;pictures.forEach(function(svg){if(svg.getBBox().width>0){drawn+=1;}});\
document.getElementById('rendered').textContent='rendered: '+drawn+' of '+pictures.length+' pictures, '+stages+' stages, '+bars+' bars';\
if(drawn===2&&pictures.length===2){root.dataset.rendered=root.dataset.rendered==='error'?'error':'ok';}else{root.dataset.rendered='incomplete';}\
})();";
