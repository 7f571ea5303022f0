//! Change windows: [`ChangeWindows`], a gate of allow and deny [`Window`]s (weekly, like
//! "no deploys Friday 16:00 to Monday 08:00", or between two dates, like a holiday freeze)
//! in a fixed UTC offset, with recorded [`Overrides`].
//!
//! Calendar arithmetic (weekday and wall-clock time of an instant in an offset, the instant of
//! a wall-clock date) is `jiff`'s; this module only compares and adds whole weeks.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use jiff::civil::DateTime;
use jiff::tz::Offset;

use super::GateError;
use super::{Gate, GateContext, Verdict};

type Result<T, E = GateError> = std::result::Result<T, E>;
use crate::id::{Person, ReleaseId};
use crate::time::Timestamp;

const WEEK_MS: i64 = 7 * 24 * 3600 * 1000;
const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// A span of wall-clock time in the gate's offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Window {
    /// Every week from one weekday and time to another; it may wrap over the week's end
    /// ("Fri 16:00" to "Mon 08:00").
    Weekly {
        /// The window's name, for verdicts.
        name: String,
        /// Milliseconds into the week (Monday 00:00) where it starts.
        from: i64,
        /// Milliseconds into the week where it ends.
        to: i64,
    },
    /// Once, from one date and time to another (a holiday freeze).
    Dates {
        /// The window's name, for verdicts.
        name: String,
        /// Where it starts, as written.
        from: DateTime,
        /// Where it ends, as written.
        to: DateTime,
    },
}

/// Overrides granted on a [`ChangeWindows`] gate: shared between the gate (inside the
/// pipeline) and the host that grants them. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Overrides(Arc<Mutex<Vec<Override>>>, Arc<Mutex<Vec<Person>>>);

/// One person's permission for one release to ignore the windows until a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// The release it applies to.
    pub release: ReleaseId,
    /// Who granted it.
    pub by: Person,
    /// Why, in their words.
    pub reason: String,
    /// When it stops applying.
    pub until: Timestamp,
}

impl Overrides {
    /// Lets `release` through the windows until `until`, on `person`'s authority and for
    /// `reason` (which may not be blank). The gate's verdict then records both. Only the
    /// people the gate names ([`ChangeWindows::overridable_by`]) may grant one: by default,
    /// nobody.
    pub fn grant(
        &self,
        release: &ReleaseId,
        person: &str,
        reason: &str,
        until: Timestamp,
    ) -> Result<()> {
        let by = Person::new(person)?;
        let may = self
            .1
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&by);
        if !may {
            return Err(GateError::Invalid {
                gate: "change-window override".to_owned(),
                reason: format!(
                    "`{by}` may not override the windows (see `ChangeWindows::overridable_by`)"
                ),
            });
        }
        if reason.trim().is_empty() {
            return Err(GateError::Invalid {
                gate: "change-window override".to_owned(),
                reason: format!("`{by}` gave no reason for overriding the windows"),
            });
        }
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Override {
                release: release.clone(),
                by,
                reason: reason.to_owned(),
                until,
            });
        Ok(())
    }

    /// The latest override for `release` still in force at `now`. Expired overrides are
    /// dropped on the way (their record lives in the verdicts they produced).
    fn active(&self, release: &ReleaseId, now: Timestamp) -> Option<Override> {
        let mut grants = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        grants.retain(|o| now < o.until);
        grants.iter().rev().find(|o| &o.release == release).cloned()
    }

    /// How many overrides are held (expired ones go when the gate is next evaluated).
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether no override is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A gate that opens a move only inside allowed windows and never inside denied ones.
///
/// Deny beats allow. With no allow windows, every time outside the deny windows is allowed.
/// Inside a deny window (or outside every allow window) the verdict is pending until the
/// window ends (or the next allow window starts); once no allow window lies ahead, it is
/// closed. A person can [`grant`](Overrides::grant) an override for one release, which opens
/// the gate with a verdict naming them and their reason.
///
/// ```
/// use tollgate::gate::ChangeWindows;
///
/// let windows = ChangeWindows::new("change-windows", "+01:00")?
///     .deny_weekly("weekend", "Fri 16:00", "Mon 08:00")?
///     .deny_dates("holiday-freeze", "2026-12-21T00:00", "2027-01-04T08:00")?;
/// assert_eq!(windows.windows().count(), 2);
/// # Ok::<(), tollgate::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ChangeWindows {
    name: String,
    offset: Offset,
    allow: Vec<Window>,
    deny: Vec<Window>,
    overrides: Overrides,
}

impl ChangeWindows {
    /// A gate called `name` reading wall-clock times in the UTC offset `offset`
    /// (`"+02:00"`, `"-05:30"`, `"Z"`), with no windows yet.
    pub fn new(name: impl Into<String>, offset: &str) -> Result<Self> {
        let name = name.into();
        let offset = parse_offset(offset).map_err(|reason| GateError::Invalid {
            gate: name.clone(),
            reason,
        })?;
        Ok(ChangeWindows {
            name,
            offset,
            allow: Vec::new(),
            deny: Vec::new(),
            overrides: Overrides::default(),
        })
    }

    /// Denies moves every week from `from` to `to` (`"Fri 16:00"`, `"Mon 08:00"`).
    pub fn deny_weekly(mut self, name: &str, from: &str, to: &str) -> Result<Self> {
        let window = self.weekly(name, from, to)?;
        self.deny.push(window);
        Ok(self)
    }

    /// Allows moves every week from `from` to `to`.
    pub fn allow_weekly(mut self, name: &str, from: &str, to: &str) -> Result<Self> {
        let window = self.weekly(name, from, to)?;
        self.allow.push(window);
        Ok(self)
    }

    /// Denies moves from one wall-clock date and time to another (`"2026-12-21T00:00"`).
    pub fn deny_dates(mut self, name: &str, from: &str, to: &str) -> Result<Self> {
        let window = self.dates(name, from, to)?;
        self.deny.push(window);
        Ok(self)
    }

    /// Allows moves from one wall-clock date and time to another.
    pub fn allow_dates(mut self, name: &str, from: &str, to: &str) -> Result<Self> {
        let window = self.dates(name, from, to)?;
        self.allow.push(window);
        Ok(self)
    }

    /// Lets `people` (and only them) grant overrides; by default nobody may. Like an
    /// approval policy, but for breaking glass: keep the list short.
    pub fn overridable_by<I, P>(self, people: I) -> Result<Self>
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        let people = people
            .into_iter()
            .map(|p| Person::new(p))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        *self
            .overrides
            .1
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = people;
        Ok(self)
    }

    /// The handle through which people grant overrides.
    #[must_use]
    pub fn overrides(&self) -> Overrides {
        self.overrides.clone()
    }

    /// Every window, denied ones first.
    pub fn windows(&self) -> impl Iterator<Item = &Window> + '_ {
        self.deny.iter().chain(&self.allow)
    }

    fn invalid(&self, reason: String) -> GateError {
        GateError::Invalid {
            gate: self.name.clone(),
            reason,
        }
    }

    fn weekly(&self, name: &str, from: &str, to: &str) -> Result<Window> {
        let from = parse_week_time(from).map_err(|r| self.invalid(r))?;
        let to = parse_week_time(to).map_err(|r| self.invalid(r))?;
        if from == to {
            return Err(self.invalid(format!("window `{name}` starts where it ends")));
        }
        Ok(Window::Weekly {
            name: name.to_owned(),
            from,
            to,
        })
    }

    fn dates(&self, name: &str, from: &str, to: &str) -> Result<Window> {
        let parse = |s: &str| {
            s.parse::<DateTime>()
                .map_err(|e| self.invalid(format!("`{s}` is not a date and time: {e}")))
        };
        let (from, to) = (parse(from)?, parse(to)?);
        if from >= to {
            return Err(self.invalid(format!("window `{name}` ends before it starts")));
        }
        // Both ends must exist as instants in this offset.
        self.instant(from)?;
        self.instant(to)?;
        Ok(Window::Dates {
            name: name.to_owned(),
            from,
            to,
        })
    }

    /// The instant of a wall-clock time in this offset.
    fn instant(&self, at: DateTime) -> Result<Timestamp> {
        let ts = self
            .offset
            .to_timestamp(at)
            .map_err(|e| self.invalid(format!("`{at}` is out of range: {e}")))?;
        u64::try_from(ts.as_millisecond())
            .map(Timestamp::from_millis)
            .map_err(|_| self.invalid(format!("`{at}` is before 1970")))
    }

    /// Milliseconds into the local week (Monday 00:00) at `now`.
    fn week_ms(&self, now: Timestamp) -> i64 {
        let ms = i64::try_from(now.as_millis()).unwrap_or(i64::MAX);
        let Ok(ts) = jiff::Timestamp::from_millisecond(ms) else {
            return 0;
        };
        let local = self.offset.to_datetime(ts);
        let day = i64::from(local.weekday().to_monday_zero_offset());
        let seconds = day * 86_400
            + i64::from(local.hour()) * 3600
            + i64::from(local.minute()) * 60
            + i64::from(local.second());
        seconds * 1000 + ms.rem_euclid(1000)
    }

    /// If `window` contains `now`, when it ends.
    fn end_if_inside(&self, window: &Window, now: Timestamp) -> Option<Timestamp> {
        match window {
            Window::Weekly { from, to, .. } => {
                let at = self.week_ms(now);
                let inside = if from < to {
                    (*from..*to).contains(&at)
                } else {
                    at >= *from || at < *to
                };
                inside.then(|| later(now, (to - at).rem_euclid(WEEK_MS)))
            }
            Window::Dates { from, to, .. } => {
                let (from, to) = (self.instant(*from).ok()?, self.instant(*to).ok()?);
                (from..to).contains(&now).then_some(to)
            }
        }
    }

    /// When `window` next starts after `now`, if it ever does.
    fn next_start(&self, window: &Window, now: Timestamp) -> Option<Timestamp> {
        match window {
            Window::Weekly { from, .. } => {
                Some(later(now, (from - self.week_ms(now)).rem_euclid(WEEK_MS)))
            }
            Window::Dates { from, .. } => self.instant(*from).ok().filter(|&t| t > now),
        }
    }

    fn describe(&self, window: &Window) -> String {
        let offset = format_offset(self.offset);
        match window {
            Window::Weekly { name, from, to } => format!(
                "`{name}`, {} to {} {offset}",
                format_week_time(*from),
                format_week_time(*to)
            ),
            Window::Dates { name, from, to } => {
                format!("`{name}`, {from} to {to} {offset}")
            }
        }
    }
}

#[async_trait]
impl Gate for ChangeWindows {
    async fn evaluate(&self, ctx: &GateContext<'_>) -> Verdict {
        let now = ctx.now();
        let blocked = if let Some((window, end)) = self
            .deny
            .iter()
            .find_map(|w| self.end_if_inside(w, now).map(|end| (w, end)))
        {
            Verdict::Pending {
                waiting_for: format!("the end of deny window {}", self.describe(window)),
                until: Some(end),
            }
        } else if !self.allow.is_empty()
            && !self
                .allow
                .iter()
                .any(|w| self.end_if_inside(w, now).is_some())
        {
            let next = self
                .allow
                .iter()
                .filter_map(|w| self.next_start(w, now).map(|t| (w, t)))
                .min_by_key(|&(_, t)| t);
            match next {
                Some((window, start)) => Verdict::Pending {
                    waiting_for: format!("allow window {}", self.describe(window)),
                    until: Some(start),
                },
                None => Verdict::closed("no allow window lies ahead"),
            }
        } else {
            return Verdict::Open;
        };
        match self.overrides.active(ctx.release().id(), now) {
            Some(o) => Verdict::Overridden {
                by: o.by,
                reason: o.reason,
            },
            None => blocked,
        }
    }

    fn name(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.name)
    }

    /// A window's verdict follows from the time; an override a person granted is recorded
    /// as such (an overridden verdict is taken as recorded by a restore).
    fn replayable(&self) -> bool {
        true
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Window::Weekly { name, from, to } => write!(
                f,
                "{name}: {} to {}",
                format_week_time(*from),
                format_week_time(*to)
            ),
            Window::Dates { name, from, to } => write!(f, "{name}: {from} to {to}"),
        }
    }
}

fn later(now: Timestamp, ms: i64) -> Timestamp {
    now.saturating_add(std::time::Duration::from_millis(ms.unsigned_abs()))
}

/// `"+02:00"`, `"-05:30"`, `"Z"`, `"+00:00"`.
fn parse_offset(text: &str) -> std::result::Result<Offset, String> {
    let bad = || {
        format!(
            "`{}` is not a UTC offset like `+02:00`",
            crate::id::quoted(text)
        )
    };
    if text == "Z" {
        return Ok(Offset::UTC);
    }
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    // Exactly two digits each, no signs of their own: `+-1:00`, `+01:-30` and
    // `+-2147483648:00` are not offsets.
    let two_digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !two_digits(h) || !two_digits(m) {
        return Err(bad());
    }
    let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 25 || m > 59 {
        return Err(bad());
    }
    Offset::from_seconds(sign * (h * 3600 + m * 60)).map_err(|e| format!("{}: {e}", bad()))
}

fn format_offset(offset: Offset) -> String {
    let s = offset.seconds();
    let sign = if s < 0 { '-' } else { '+' };
    let s = s.unsigned_abs();
    format!("UTC{sign}{:02}:{:02}", s / 3600, s % 3600 / 60)
}

/// `"Fri 16:00"` → milliseconds into the week.
fn parse_week_time(text: &str) -> std::result::Result<i64, String> {
    let bad = || format!("`{text}` is not a weekday and time like `Fri 16:00`");
    let (day, time) = text.trim().split_once(' ').ok_or_else(bad)?;
    let day = DAYS
        .iter()
        .position(|d| d.eq_ignore_ascii_case(day))
        .ok_or_else(bad)?;
    let (h, m) = time.trim().split_once(':').ok_or_else(bad)?;
    let (h, m): (i64, i64) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if !(0..24).contains(&h) || !(0..60).contains(&m) {
        return Err(bad());
    }
    let day = i64::try_from(day).map_err(|_| bad())?;
    Ok(((day * 24 + h) * 60 + m) * 60_000)
}

fn format_week_time(ms: i64) -> String {
    let minutes = ms / 60_000;
    let (day, rest) = (minutes / 1440, minutes % 1440);
    format!(
        "{} {:02}:{:02}",
        DAYS[usize::try_from(day).unwrap_or(0) % 7],
        rest / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_week_times_parse_and_explain_what_is_wrong() {
        assert_eq!(parse_offset("+02:00").unwrap().seconds(), 7200);
        assert_eq!(parse_offset("-05:30").unwrap().seconds(), -19800);
        assert_eq!(parse_offset("Z").unwrap().seconds(), 0);
        for bad in ["02:00", "+2", "+02:60", "CET", ""] {
            assert!(
                parse_offset(bad).unwrap_err().contains("UTC offset"),
                "{bad}"
            );
        }
        assert_eq!(parse_week_time("Mon 00:00").unwrap(), 0);
        assert_eq!(
            parse_week_time("fri 16:30").unwrap(),
            ((4 * 24 + 16) * 60 + 30) * 60_000
        );
        assert_eq!(
            format_week_time(parse_week_time("Sun 23:59").unwrap()),
            "Sun 23:59"
        );
        for bad in ["Friday 16:00", "Fri 24:00", "Fri", "Fri 16"] {
            assert!(parse_week_time(bad).is_err(), "{bad}");
        }
    }
}
