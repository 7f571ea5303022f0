//! A run as a timeline: the bars and marks read from a release's events, drawn as a Mermaid
//! gantt here and as SVG by the report.

use std::fmt::Write as _;

use crate::engine::Event;
use crate::executor::StageStatus;
use crate::lifecycle::Step;
use crate::time::Timestamp;

/// How a bar ended, which colours it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    Succeeded,
    Failed,
    Other,
}

/// One bar: an attempt of a stage, or the release waiting somewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bar {
    /// The section it belongs to: a step's name, or `release`.
    pub section: String,
    pub label: String,
    pub start: Timestamp,
    pub end: Timestamp,
    pub ending: Ending,
}

/// One instant: a move, an approval, a deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mark {
    pub label: String,
    pub at: Timestamp,
}

/// What a timeline shows, read from the events in the order they came.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    pub bars: Vec<Bar>,
    pub marks: Vec<Mark>,
    pub title: Option<String>,
}

impl Timeline {
    /// Reads `events`: each attempt of a stage becomes a bar in its step's section (from its
    /// start to its failure, or to the stage's end for the last one), a wait at a gate or at
    /// the button becomes a bar in the `release` section until the move it waited for is
    /// taken, and the release events become marks.
    pub(crate) fn read(events: &[Event]) -> Self {
        let mut timeline = Timeline::default();
        let mut step = None::<Step>;
        // Open attempts: stage, attempt, start.
        let mut open: Vec<(String, u32, Timestamp)> = Vec::new();
        let mut parked: Option<(String, Timestamp)> = None;
        for event in events {
            let section = step.map_or_else(|| "release".to_owned(), |s| s.to_string());
            match event {
                Event::StepStarted { step: s, .. } => step = Some(*s),
                Event::StepFinished { .. } => step = None,
                Event::AttemptStarted { stage, attempt, at } => {
                    open.push((stage.as_str().to_owned(), *attempt, *at));
                }
                Event::AttemptFailed {
                    stage, attempt, at, ..
                } => {
                    if let Some(pos) = open
                        .iter()
                        .position(|(s, a, _)| s == stage.as_str() && a == attempt)
                    {
                        let (name, attempt, start) = open.remove(pos);
                        timeline.bars.push(Bar {
                            section,
                            label: format!("{name} (attempt {attempt})"),
                            start,
                            end: *at,
                            ending: Ending::Failed,
                        });
                    }
                }
                Event::StageFinished {
                    stage,
                    status,
                    attempts,
                    at,
                } => {
                    if let Some(pos) = open.iter().position(|(s, _, _)| s == stage.as_str()) {
                        let (name, attempt, start) = open.remove(pos);
                        let label = if *attempts > 1 {
                            format!("{name} (attempt {attempt})")
                        } else {
                            name
                        };
                        let ending = match status {
                            StageStatus::Succeeded => Ending::Succeeded,
                            StageStatus::Failed { .. } | StageStatus::TimedOut { .. } => {
                                Ending::Failed
                            }
                            _ => Ending::Other,
                        };
                        timeline.bars.push(Bar {
                            section,
                            label,
                            start,
                            end: *at,
                            ending,
                        });
                    }
                }
                other => timeline.read_release_event(other, &mut parked),
            }
        }
        timeline
    }

    /// Reads a release event: a mark, or the start or end of a wait.
    fn read_release_event(&mut self, event: &Event, parked: &mut Option<(String, Timestamp)>) {
        let timeline = self;
        match event {
            Event::ReleaseStarted { release, at, .. } => {
                timeline
                    .title
                    .get_or_insert_with(|| release.as_str().to_owned());
                timeline.marks.push(Mark {
                    label: "started".to_owned(),
                    at: *at,
                });
            }
            Event::Parked { gate, at, mv, .. } => {
                let what = match gate {
                    Some(gate) => format!("waiting at gate {gate}"),
                    None => format!("waiting at the button to {mv}"),
                };
                // A new reason to wait ends the wait before it.
                if let Some((label, start)) = parked.take_if(|(label, _)| *label != what) {
                    timeline.bars.push(Bar {
                        section: "release".to_owned(),
                        label,
                        start,
                        end: *at,
                        ending: Ending::Other,
                    });
                }
                parked.get_or_insert((what, *at));
            }
            Event::Moved { to, at, .. } => {
                if let Some((label, start)) = parked.take() {
                    timeline.bars.push(Bar {
                        section: "release".to_owned(),
                        label,
                        start,
                        end: *at,
                        ending: Ending::Other,
                    });
                }
                timeline.marks.push(Mark {
                    label: to.to_string(),
                    at: *at,
                });
            }
            Event::Approved { by, at, .. } => {
                let label = if by.is_empty() {
                    "approved by the gates".to_owned()
                } else {
                    let names: Vec<&str> = by.iter().map(crate::id::Person::as_str).collect();
                    format!("approved by {}", names.join(", "))
                };
                timeline.marks.push(Mark { label, at: *at });
            }
            Event::Refused { mv, at, .. } => timeline.marks.push(Mark {
                label: format!("{mv} refused"),
                at: *at,
            }),
            _ => {}
        }
    }

    /// The first and last instants shown.
    pub(crate) fn span(&self) -> Option<(Timestamp, Timestamp)> {
        let instants = self
            .bars
            .iter()
            .flat_map(|b| [b.start, b.end])
            .chain(self.marks.iter().map(|m| m.at));
        instants.fold(None, |span, t| match span {
            None => Some((t, t)),
            Some((lo, hi)) => Some((lo.min(t), hi.max(t))),
        })
    }
}

/// A run as a [Mermaid gantt](https://mermaid.js.org/syntax/gantt.html), from the events of
/// one release (an [`EventLog`](crate::engine::EventLog) on a pipeline that runs one release
/// at a time, or the events of one release picked out of the stream: stage events carry no
/// release, they belong to the step around them).
///
/// A section per step holds a bar per stage (a bar per attempt when it was retried, marked
/// `crit` when it failed, `done` when it succeeded); the `release` section holds the waits
/// at a gate or at the button as bars, and the moves and approvals as milestones. Times are
/// the events' milliseconds (`dateFormat x`); a `:` in a label, which would end it, is
/// drawn as `∶`.
///
/// ```
/// use tollgate::engine::Event;
/// use tollgate::picture::gantt;
///
/// let events: Vec<Event> = serde_json::from_str(r#"[
///   {"event":"step_started","release":"shop-1","step":"build","stages":1,"at":0},
///   {"event":"attempt_started","stage":"compile","attempt":1,"at":0},
///   {"event":"stage_finished","stage":"compile","status":"succeeded","attempts":1,"at":1500},
///   {"event":"step_finished","release":"shop-1","step":"build","succeeded":true,"at":1500},
///   {"event":"moved","release":"shop-1","from":"commit","to":"built","at":1500}
/// ]"#)?;
/// assert_eq!(gantt(&events), "\
/// gantt
///     dateFormat x
///     axisFormat %M:%S
///     section build
///     compile :done, t0, 0, 1500
///     section release
///     built :milestone, m0, 1500, 1500
/// ");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[must_use]
pub fn gantt(events: &[Event]) -> String {
    let timeline = Timeline::read(events);
    let mut out = String::from("gantt\n");
    if let Some(title) = &timeline.title {
        let _ = writeln!(out, "    title {}", gantt_text(title));
    }
    out.push_str("    dateFormat x\n    axisFormat %M:%S\n");
    let mut section: Option<&str> = None;
    let release_bars = timeline.bars.iter().filter(|b| b.section == "release");
    let step_bars = timeline.bars.iter().filter(|b| b.section != "release");
    for (i, bar) in step_bars.enumerate() {
        if section != Some(bar.section.as_str()) {
            let _ = writeln!(out, "    section {}", bar.section);
            section = Some(&bar.section);
        }
        let tag = match bar.ending {
            Ending::Succeeded => "done, ",
            Ending::Failed => "crit, ",
            Ending::Other => "",
        };
        let _ = writeln!(
            out,
            "    {} :{tag}t{i}, {}, {}",
            gantt_text(&bar.label),
            bar.start.as_millis(),
            bar.end.as_millis()
        );
    }
    let mut release_bars = release_bars.peekable();
    if release_bars.peek().is_some() || !timeline.marks.is_empty() {
        out.push_str("    section release\n");
    }
    for (i, bar) in release_bars.enumerate() {
        let _ = writeln!(
            out,
            "    {} :active, w{i}, {}, {}",
            gantt_text(&bar.label),
            bar.start.as_millis(),
            bar.end.as_millis()
        );
    }
    for (i, mark) in timeline.marks.iter().enumerate() {
        let at = mark.at.as_millis();
        let _ = writeln!(
            out,
            "    {} :milestone, m{i}, {at}, {at}",
            gantt_text(&mark.label)
        );
    }
    out
}

/// A gantt label: `:` and `#` (which would end it or start an entity) as look-alikes, line
/// breaks as spaces.
fn gantt_text(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            ':' => '\u{2236}', // ∶ (ratio)
            '#' => '\u{2116}', // № (numero sign)
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}
