//! Reading a [`PipelineSpec`] from TOML or JSON, and [`SpecError`]: each error of a spec file
//! says where it is (file, line, column, the offending text), in which field (`stages[2].retry`)
//! and, for a misspelt key or name, which one was meant.

use std::fmt;
use std::path::Path;

use crate::environment::EnvironmentName;
use crate::id::{StageId, quoted};
use crate::lifecycle::ModeKind;

use super::PipelineSpec;

/// Where in a spec file something is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file's name, as the host gave it.
    pub file: String,
    /// The line, from 1.
    pub line: usize,
    /// The column, from 1, in characters.
    pub column: usize,
    /// The offending text: the TOML value or key the error is about, or the JSON line.
    pub text: String,
    /// The whole line, for showing the error in context.
    pub source_line: String,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// What is wrong with a pipeline spec: where it is, when it comes from the file, and what was
/// meant, when that can be told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The file does not parse, or a value in it is not what its field takes (an unknown key,
    /// a wrong type, a malformed name or duration).
    #[error(
        "{location}: {}{message}{}\n{}",
        at_path(.path),
        did_you_mean(.suggestion.as_deref()),
        excerpt(.location)
    )]
    Invalid {
        /// Where.
        location: Box<Location>,
        /// The field's path (`stages[1].retry`), empty at the top.
        path: String,
        /// What is wrong, as the parser says it.
        message: String,
        /// The key or name that was probably meant.
        suggestion: Option<String>,
    },
    /// The spec file could not be read.
    #[error("cannot read {file}: {message}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        message: String,
    },
    /// The file's extension names no format tollgate reads (`.toml`, `.json`), or names TOML
    /// in a build without the `toml` feature.
    #[error("cannot read {file}: {reason}")]
    Format {
        /// The file.
        file: String,
        /// Why.
        reason: &'static str,
    },
    /// The spec names the other mode than the pipeline type it is built as.
    #[error("the spec is for a {spec} pipeline, not a {built} one")]
    ModeMismatch {
        /// The mode the spec names.
        spec: ModeKind,
        /// The mode of the pipeline type it was built as.
        built: ModeKind,
    },
    /// A delivery spec has no `approvals`.
    #[error("a delivery spec needs `approvals`: a person approves every production release")]
    MissingApprovals,
    /// A deployment spec has `approvals`.
    #[error("a deployment spec takes no `approvals`: its automated gates alone approve")]
    ApprovalsInDeployment,
    /// An environment's approval policy has environments of its own.
    #[error("approvals for environment `{environment}` cannot have `environments` of their own")]
    NestedApprovals {
        /// The environment.
        environment: EnvironmentName,
    },
    /// A gate's kind is not in the registry.
    #[error("gates[{index}]: unknown gate kind `{}`{} (known: {})", quoted(.kind), did_you_mean(.suggestion.as_deref()), .known.join(", "))]
    UnknownGate {
        /// The gate's position in the spec's `gates`.
        index: usize,
        /// The kind asked for.
        kind: String,
        /// The registered kind probably meant.
        suggestion: Option<String>,
        /// Every registered kind.
        known: Vec<String>,
    },
    /// A gate's parameters are refused by its factory.
    #[error("gates[{index}].params{} (`{kind}`): {message}{}", dotted(.path), did_you_mean(.suggestion.as_deref()))]
    GateParams {
        /// The gate's position in the spec's `gates`.
        index: usize,
        /// Its kind.
        kind: String,
        /// The parameter's path inside `params`, empty for the whole.
        path: String,
        /// What is wrong.
        message: String,
        /// The parameter name probably meant.
        suggestion: Option<String>,
    },
    /// A gate names neither a move nor an environment, or both.
    #[error("gates[{index}] (`{kind}`): set exactly one of `on` (a move) and `environment`")]
    GateTarget {
        /// The gate's position in the spec's `gates`.
        index: usize,
        /// Its kind.
        kind: String,
    },
    /// A stage's command cannot be run: it names neither a script nor a program, or both, or
    /// this build of tollgate has no process executor (feature `process`).
    #[error("stage `{stage}` cannot run its command: {reason}")]
    Command {
        /// The stage.
        stage: StageId,
        /// Why.
        reason: &'static str,
    },
    /// The spec could not be written in a format.
    #[error("cannot write the spec as {format}: {message}")]
    Write {
        /// The format.
        format: &'static str,
        /// Why.
        message: String,
    },
}

fn at_path(path: &str) -> String {
    if path.is_empty() || path == "." {
        String::new()
    } else {
        format!("{path}: ")
    }
}

fn dotted(path: &str) -> String {
    if path.is_empty() || path == "." {
        String::new()
    } else {
        format!(".{path}")
    }
}

fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion.map_or_else(String::new, |s| format!(" (did you mean `{s}`?)"))
}

fn excerpt(location: &Location) -> String {
    let gutter = " ".repeat(location.line.to_string().len());
    let caret_at: String = location
        .source_line
        .chars()
        .take(location.column.saturating_sub(1))
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    let width = location.text.chars().count().clamp(1, 80);
    format!(
        "{gutter} |\n{} | {}\n{gutter} | {caret_at}{}",
        location.line,
        quoted_line(&location.source_line),
        "^".repeat(width)
    )
}

/// A source line as shown in an error: control characters escaped, long lines cut.
fn quoted_line(line: &str) -> String {
    let q = quoted(line);
    // `quoted` wraps the text in backticks; the excerpt shows it bare.
    q.strip_prefix('`')
        .and_then(|s| s.strip_suffix('`'))
        .map_or(q.clone(), str::to_owned)
}

impl PipelineSpec {
    /// Reads a spec from JSON; `file` names it in errors.
    ///
    /// ```
    /// use tollgate::spec::{PipelineSpec, SpecError};
    ///
    /// let text = "{\n  \"name\": \"web\",\n  \"mode\": \"deployment\",\n  \"stagse\": []\n}";
    /// let Err(SpecError::Invalid { location, suggestion, .. }) = PipelineSpec::from_json_str(text, "web.json")
    /// else { panic!("a misspelt key is refused") };
    /// assert_eq!((location.line, suggestion.as_deref()), (4, Some("stages")));
    /// ```
    pub fn from_json_str(text: &str, file: impl Into<String>) -> Result<Self, SpecError> {
        let file = file.into();
        let mut de = serde_json::Deserializer::from_str(text);
        let spec: PipelineSpec = serde_path_to_error::deserialize(&mut de)
            .map_err(|e| json_error(&file, text, e.inner(), &e.path().to_string()))?;
        de.end().map_err(|e| json_error(&file, text, &e, ""))?;
        Ok(spec)
    }

    /// Reads a spec from TOML (feature `toml`); `file` names it in errors.
    ///
    /// ```
    /// use tollgate::spec::PipelineSpec;
    ///
    /// let text = r#"
    /// name = "web"
    /// mode = "deployment"
    ///
    /// [[stages]]
    /// id = "unit"
    /// step = "test"
    /// aftr = ["compile"]
    /// "#;
    /// let error = PipelineSpec::from_toml_str(text, "web.toml").unwrap_err().to_string();
    /// assert!(error.starts_with("web.toml:8:1: stages[0].aftr: unknown field `aftr`"), "{error}");
    /// assert!(error.contains("(did you mean `after`?)"), "{error}");
    /// ```
    #[cfg(feature = "toml")]
    pub fn from_toml_str(text: &str, file: impl Into<String>) -> Result<Self, SpecError> {
        let file = file.into();
        let de = toml::Deserializer::parse(text).map_err(|e| toml_error(&file, text, &e, ""))?;
        serde_path_to_error::deserialize(de)
            .map_err(|e| toml_error(&file, text, e.inner(), &e.path().to_string()))
    }

    /// Reads a spec file: TOML (feature `toml`) for `.toml`, JSON for `.json`.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, SpecError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let read = || {
            std::fs::read_to_string(path).map_err(|e| SpecError::Read {
                file: file.clone(),
                message: e.to_string(),
            })
        };
        match extension {
            "json" => Self::from_json_str(&read()?, file.clone()),
            #[cfg(feature = "toml")]
            "toml" => Self::from_toml_str(&read()?, file.clone()),
            #[cfg(not(feature = "toml"))]
            "toml" => Err(SpecError::Format {
                file,
                reason: "TOML specs need tollgate's `toml` feature",
            }),
            _ => Err(SpecError::Format {
                file,
                reason: "a spec file ends in `.toml` or `.json`",
            }),
        }
    }

    /// The spec as pretty-printed JSON.
    #[must_use]
    pub fn to_json_string(&self) -> String {
        // Every field serializes to JSON (string keys, no non-finite floats), so this cannot
        // fail; an empty string would only hide a bug, which the round-trip tests would show.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The spec as TOML (feature `toml`).
    #[cfg(feature = "toml")]
    pub fn to_toml_string(&self) -> Result<String, SpecError> {
        toml::to_string(self).map_err(|e| SpecError::Write {
            format: "TOML",
            message: e.to_string(),
        })
    }
}

fn json_error(file: &str, text: &str, error: &serde_json::Error, path: &str) -> SpecError {
    let (line, column) = (error.line().max(1), error.column().max(1));
    let line_start = text
        .split_inclusive('\n')
        .take(line - 1)
        .map(str::len)
        .sum::<usize>()
        .min(text.len());
    let source_line = text[line_start..].lines().next().unwrap_or("");
    let full = error.to_string();
    // serde_json ends its message with where it is, which the location already says.
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
    // serde_json points just past the offending token: show the token that ends there.
    let before: String = source_line.chars().take(column).collect();
    let token = last_token(&before);
    let end = line_start + before.len();
    let start = end - token.len();
    invalid(file, text, start..end, Format::Json, path, message)
}

/// The last JSON token of `text`: a quoted string or a run of other non-space characters,
/// as it stands in `text` with what follows it trimmed.
fn last_token(text: &str) -> &str {
    let trimmed = text.trim_end_matches([',', ':', ' ', '\t', '}', ']']);
    if let Some(body) = trimmed.strip_suffix('"') {
        if let Some(open) = body.rfind('"') {
            return &trimmed[open..];
        }
    }
    let start = trimmed
        .rfind(|c: char| c.is_whitespace() || matches!(c, ',' | ':' | '[' | '{'))
        .map_or(0, |i| i + 1);
    &trimmed[start..]
}

#[cfg(feature = "toml")]
fn toml_error(file: &str, text: &str, error: &toml::de::Error, path: &str) -> SpecError {
    let span = error.span().unwrap_or(0..0);
    let message = error.message().trim_end().to_owned();
    invalid(file, text, span, Format::Toml, path, message)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    #[cfg(feature = "toml")]
    Toml,
}

/// Where the key `key` is written in `region` of `text`, as a key (`"key":` in JSON,
/// `key =` in TOML): the last such place, since a parser reports an unknown key once it has
/// read the whole object around it (serde buffers an internally tagged enum's fields).
fn find_key(
    text: &str,
    region: std::ops::Range<usize>,
    key: &str,
    format: Format,
) -> Option<usize> {
    let area = text.get(region.clone())?;
    let quoted = format!("\"{key}\"");
    let needle = if format == Format::Json {
        quoted.as_str()
    } else {
        key
    };
    area.rmatch_indices(needle)
        .find(|&(at, _)| {
            let after = area[at + needle.len()..].trim_start_matches([' ', '\t']);
            match format {
                Format::Json => after.starts_with(':'),
                #[cfg(feature = "toml")]
                Format::Toml => {
                    let before = area[..at].trim_end_matches([' ', '\t']);
                    let opens = before.is_empty() || before.ends_with(['\n', '{', ',', '[']);
                    after.starts_with('=') && opens
                }
            }
        })
        .map(|(at, _)| region.start + at)
}

/// The error about `span` of `text`; an unknown key's error is moved onto the key itself
/// when the parser pointed at the object around it.
fn invalid(
    file: &str,
    text: &str,
    span: std::ops::Range<usize>,
    format: Format,
    path: &str,
    message: String,
) -> SpecError {
    let mut start = floor_char(text, span.start.min(text.len()));
    let mut end = floor_char(text, span.end.clamp(start, text.len()));
    let mut path = if path == "." {
        String::new()
    } else {
        path.to_owned()
    };
    if let Some(key) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
    {
        let spanned = &text[start..end];
        let on_key = spanned == key || spanned == format!("\"{key}\"");
        if !on_key {
            // TOML's span covers the table; serde_json points past its closing brace.
            let region = match format {
                Format::Json => 0..end,
                #[cfg(feature = "toml")]
                Format::Toml => start..end,
            };
            if let Some(at) = find_key(text, region, key, format) {
                start = at;
                end = at + key.len() + if format == Format::Json { 2 } else { 0 };
            }
            if !path.ends_with(key) {
                path = if path.is_empty() {
                    key.to_owned()
                } else {
                    format!("{path}.{key}")
                };
            }
        }
    }
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let location = Location {
        file: file.to_owned(),
        line: text[..start].matches('\n').count() + 1,
        column: text[line_start..start].chars().count() + 1,
        text: text[start..end].lines().next().unwrap_or("").to_owned(),
        source_line: text[line_start..line_end].to_owned(),
    };
    SpecError::Invalid {
        location: Box::new(location),
        suggestion: suggest_from_message(&message),
        path,
        message,
    }
}

/// `at`, moved back to the start of the character it falls in.
fn floor_char(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The key or name probably meant, read from serde's own message for an unknown field or
/// variant ("unknown field `aftr`, expected one of `id`, `step`, `after`").
pub(crate) fn suggest_from_message(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field ")
        .or_else(|| message.strip_prefix("unknown variant "))?;
    let mut names = rest.split('`').skip(1).step_by(2);
    let given = names.next()?;
    suggest(given, names)
}

/// The candidate closest to `given` by edit distance, if it is close enough to be a typo (at
/// most a third of the longer name's length, and at least one edit).
pub(crate) fn suggest<'a>(
    given: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(given, c), c))
        .filter(|&(d, c)| d > 0 && d * 3 <= given.chars().count().max(c.chars().count()))
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c.to_owned())
}

/// Levenshtein distance with transpositions counted as one edit (`aftr`/`after` is 1,
/// `setp`/`step` is 1).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_the_name_meant_and_strangers_get_none() {
        let m = "unknown field `aftr`, expected one of `id`, `step`, `after`";
        assert_eq!(suggest_from_message(m).as_deref(), Some("after"));
        let m = "unknown variant `tset`, expected one of `build`, `test`, `stage`, `deploy`";
        assert_eq!(suggest_from_message(m).as_deref(), Some("test"));
        let m = "unknown field `colour`, expected one of `id`, `step`, `after`";
        assert_eq!(suggest_from_message(m), None);
        assert_eq!(suggest_from_message("invalid type: integer"), None);
    }

    #[test]
    fn edit_distance_counts_insertions_deletions_substitutions_and_swaps() {
        assert_eq!(edit_distance("aftr", "after"), 1);
        assert_eq!(edit_distance("setp", "step"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn the_last_json_token_is_the_key_or_value_just_read() {
        assert_eq!(last_token(r#"  "aftr":"#), r#""aftr""#);
        assert_eq!(last_token(r#"  "n": 12,"#), "12");
    }
}
