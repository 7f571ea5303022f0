//! Gates by name: [`GateRegistry`] (the host's table of gate factories, with tollgate's
//! built-in gates registered by default) and [`GateParams`], a gate's parameters as the spec
//! wrote them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::gate::{BoxGate, ChangeWindows, Gate, GateError, GateExt, TestResults, soak};
use crate::id::IdError;

use super::GateSpec;
use super::parse::{SpecError, suggest, suggest_from_message};

/// Makes a gate from its parameters: what a host registers under a name.
pub type GateFactory = dyn Fn(&GateParams) -> Result<BoxGate, ParamError> + Send + Sync;

/// The table of gates a spec may name, each a factory from [`GateParams`] to a gate.
///
/// [`GateRegistry::new`] holds the built-in gates:
///
/// | kind | params | gate |
/// |---|---|---|
/// | `soak` | `duration` (`"30m"`) | [`soak`]: open once the release has waited that long in its state |
/// | `change_windows` | `name`, `offset` (`"+01:00"`, default `+00:00`), `deny_weekly`, `allow_weekly`, `deny_dates`, `allow_dates` (lists of `{ name, from, to }`), `overridable_by` (people) | [`ChangeWindows`] |
/// | `test_results` | `max_flaky` (default 0) | [`TestResults`] |
///
/// A host adds its own (a metric gate over its monitoring, say) with
/// [`register`](GateRegistry::register):
///
/// ```
/// use serde::Deserialize;
/// use tollgate::gate::{self, Verdict};
/// use tollgate::spec::GateRegistry;
///
/// #[derive(Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Ticket { queue: String }
///
/// let registry = GateRegistry::new().register("ticket_closed", |params| {
///     let ticket: Ticket = params.parse()?;
///     Ok(gate::from_fn("ticket", move |_ctx| {
///         Verdict::closed(format!("waiting for the {} queue", ticket.queue))
///     }))
/// });
/// assert!(registry.kinds().any(|k| k == "ticket_closed"));
/// assert!(registry.kinds().any(|k| k == "soak"));
/// ```
#[derive(Clone)]
pub struct GateRegistry {
    factories: BTreeMap<String, Arc<GateFactory>>,
}

impl fmt::Debug for GateRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.factories.keys()).finish()
    }
}

impl Default for GateRegistry {
    fn default() -> Self {
        GateRegistry::new()
    }
}

impl GateRegistry {
    /// A registry holding the built-in gates (see the table above).
    #[must_use]
    pub fn new() -> Self {
        GateRegistry::empty()
            .register("soak", |params| {
                let p: SoakParams = params.parse()?;
                Ok(soak(p.duration))
            })
            .register("change_windows", |params| {
                params.parse::<WindowsParams>()?.build()
            })
            .register("test_results", |params| {
                let p: TestResultsParams = params.parse()?;
                Ok(TestResults::new().max_flaky(p.max_flaky))
            })
    }

    /// A registry with no gates at all.
    #[must_use]
    pub fn empty() -> Self {
        GateRegistry {
            factories: BTreeMap::new(),
        }
    }

    /// Registers `factory` under `kind`, replacing any factory registered under it before.
    #[must_use]
    pub fn register<G, F>(mut self, kind: impl Into<String>, factory: F) -> Self
    where
        G: Gate + 'static,
        F: Fn(&GateParams) -> Result<G, ParamError> + Send + Sync + 'static,
    {
        let factory: Arc<GateFactory> = Arc::new(move |params| factory(params).map(GateExt::boxed));
        self.factories.insert(kind.into(), factory);
        self
    }

    /// The registered kinds, in order.
    pub fn kinds(&self) -> impl Iterator<Item = &str> + '_ {
        self.factories.keys().map(String::as_str)
    }

    /// Builds the gate `spec` describes, the `index`-th of its spec (for errors), named as
    /// the spec says.
    pub fn build(&self, index: usize, spec: &GateSpec) -> Result<BoxGate, SpecError> {
        let factory = self
            .factories
            .get(&spec.kind)
            .ok_or_else(|| SpecError::UnknownGate {
                index,
                kind: spec.kind.clone(),
                suggestion: suggest(&spec.kind, self.kinds()),
                known: self.kinds().map(str::to_owned).collect(),
            })?;
        let gate = factory(&spec.params).map_err(|e| SpecError::GateParams {
            index,
            kind: spec.kind.clone(),
            suggestion: suggest_from_message(&e.message),
            path: e.path,
            message: e.message,
        })?;
        Ok(match &spec.name {
            Some(name) => gate.named(name.clone()).boxed(),
            None => gate,
        })
    }
}

/// A gate's parameters as the spec wrote them: a table of keys to values, read by the gate's
/// factory into a type of its own with [`parse`](GateParams::parse).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GateParams(serde_json::Map<String, serde_json::Value>);

impl GateParams {
    /// No parameters.
    #[must_use]
    pub fn new() -> Self {
        GateParams::default()
    }

    /// Sets the parameter `key` to `value` (anything with a serde form that JSON can hold:
    /// a map with keys other than strings is refused).
    ///
    /// ```
    /// use tollgate::spec::GateParams;
    ///
    /// let params = GateParams::new().with("duration", "30m")?;
    /// assert!(!params.is_empty());
    /// # Ok::<(), tollgate::spec::ParamError>(())
    /// ```
    pub fn with(
        mut self,
        key: impl Into<String>,
        value: impl Serialize,
    ) -> Result<Self, ParamError> {
        let key = key.into();
        let value = serde_json::to_value(value).map_err(|e| ParamError::new(key.clone(), e))?;
        self.0.insert(key, value);
        Ok(self)
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads the parameters as a `T`. Give `T` `#[serde(deny_unknown_fields)]` so that a
    /// misspelt parameter is refused (and the right one suggested).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ParamError> {
        let value = serde_json::Value::Object(self.0.clone());
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            ParamError {
                path: if path == "." { String::new() } else { path },
                message: e.into_inner().to_string(),
            }
        })
    }
}

/// Why a gate factory refused its parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if .path.is_empty() { String::new() } else { format!("{}: ", .path) })]
pub struct ParamError {
    /// The parameter's path (`deny_weekly[0].from`), empty for the whole.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ParamError {
    /// An error about the parameter at `path`.
    pub fn new(path: impl Into<String>, message: impl fmt::Display) -> Self {
        ParamError {
            path: path.into(),
            message: message.to_string(),
        }
    }
}

impl From<GateError> for ParamError {
    fn from(e: GateError) -> Self {
        ParamError::new("", e)
    }
}

impl From<IdError> for ParamError {
    fn from(e: IdError) -> Self {
        ParamError::new("", e)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SoakParams {
    #[serde(with = "crate::time::human")]
    duration: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestResultsParams {
    #[serde(default)]
    max_flaky: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowsParams {
    #[serde(default = "windows_name")]
    name: String,
    #[serde(default = "utc")]
    offset: String,
    #[serde(default)]
    deny_weekly: Vec<WindowParams>,
    #[serde(default)]
    allow_weekly: Vec<WindowParams>,
    #[serde(default)]
    deny_dates: Vec<WindowParams>,
    #[serde(default)]
    allow_dates: Vec<WindowParams>,
    #[serde(default)]
    overridable_by: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowParams {
    name: String,
    from: String,
    to: String,
}

fn windows_name() -> String {
    "change-windows".into()
}

fn utc() -> String {
    "+00:00".into()
}

impl WindowsParams {
    fn build(self) -> Result<ChangeWindows, ParamError> {
        type Add = fn(ChangeWindows, &str, &str, &str) -> Result<ChangeWindows, GateError>;
        let mut gate = ChangeWindows::new(self.name, &self.offset)
            .map_err(|e| ParamError::new("offset", e))?;
        let lists: [(&str, Vec<WindowParams>, Add); 4] = [
            ("deny_weekly", self.deny_weekly, ChangeWindows::deny_weekly),
            (
                "allow_weekly",
                self.allow_weekly,
                ChangeWindows::allow_weekly,
            ),
            ("deny_dates", self.deny_dates, ChangeWindows::deny_dates),
            ("allow_dates", self.allow_dates, ChangeWindows::allow_dates),
        ];
        for (key, windows, add) in lists {
            for (i, w) in windows.iter().enumerate() {
                gate = add(gate, &w.name, &w.from, &w.to)
                    .map_err(|e| ParamError::new(format!("{key}[{i}]"), e))?;
            }
        }
        if !self.overridable_by.is_empty() {
            gate = gate
                .overridable_by(self.overridable_by)
                .map_err(|e| ParamError::new("overridable_by", e))?;
        }
        Ok(gate)
    }
}
