//! [`Capture`]: a program's output as it arrives, split into lines, kept within a memory
//! limit (its head and its tail, with a line saying what was cut between them), and read for
//! the `::output` and `::artifact` commands on the way.
//!
//! Lines are stored back to back in two byte buffers, each line as a stream tag, its bytes and
//! a newline, so a line costs its own size plus two bytes while it is captured, whatever its
//! length. The limit counts each line as its text plus [`LINE_COST`], which is about what a
//! [`LogLine`] costs once the log is handed over: the report, too, stays within the limit.

use std::collections::VecDeque;

use super::{Commands, input_is_command};
use crate::executor::{LogLine, Stream};

/// What a line counts for against the limit besides its text: about the size of a
/// [`LogLine`] and its text's allocation in the report.
pub(super) const LINE_COST: usize = 64;

/// The smallest limit a log may have, so that a line and the cut marker always fit.
pub(super) const MIN_LIMIT: usize = 4 * 1024;

const STDOUT: u8 = b'o';
const STDERR: u8 = b'e';

/// A program's captured output.
#[derive(Debug)]
pub(super) struct Capture {
    /// Half of the limit: the budget of the head, and of the tail.
    half: usize,
    head: Vec<u8>,
    head_cost: usize,
    /// Whether lines still go to the head (it closes for good at the first line that does not
    /// fit, so that the log keeps its order).
    head_open: bool,
    tail: VecDeque<u8>,
    tail_cost: usize,
    cut_lines: u64,
    cut_bytes: u64,
    /// Each stream's line in progress (bytes received since its last newline).
    pending: [Vec<u8>; 2],
    /// Whether each stream's line in progress was too long and already has pieces kept.
    split: [bool; 2],
    /// The commands read so far.
    commands: Commands,
    /// A line from tollgate itself to end the log with.
    note: Option<String>,
}

impl Capture {
    /// An empty capture that keeps at most about `limit` bytes (at least [`MIN_LIMIT`]).
    pub(super) fn new(limit: usize) -> Self {
        let limit = limit.max(MIN_LIMIT);
        Capture {
            half: limit / 2,
            head: Vec::new(),
            head_cost: 0,
            head_open: true,
            tail: VecDeque::new(),
            tail_cost: 0,
            cut_lines: 0,
            cut_bytes: 0,
            pending: [Vec::new(), Vec::new()],
            split: [false, false],
            commands: Commands::new(limit),
            note: None,
        }
    }

    /// The longest line kept whole: a longer one is split into pieces this long, so that any
    /// piece fits in the tail on its own.
    fn max_line(&self) -> usize {
        self.half - LINE_COST
    }

    /// Takes in `data`, just read from `stream`.
    pub(super) fn feed(&mut self, stream: Stream, mut data: &[u8]) {
        let index = stream_index(stream);
        while !data.is_empty() {
            let (part, newline) = match data.iter().position(|&b| b == b'\n') {
                Some(at) => (&data[..at], true),
                None => (data, false),
            };
            data = &data[(part.len() + usize::from(newline)).min(data.len())..];
            if newline
                && self.pending[index].is_empty()
                && !self.split[index]
                && part.len() <= self.max_line()
            {
                // The common case: a whole line in one read, kept without a copy.
                self.line(stream, strip_cr(part), true);
                continue;
            }
            self.extend_pending(stream, part);
            if newline {
                let mut pending = std::mem::take(&mut self.pending[index]);
                self.end_line(stream, &pending, true);
                pending.clear();
                self.pending[index] = pending;
            }
        }
    }

    /// Ends `stream`: its last line, if it had no newline, is a line too.
    pub(super) fn finish(&mut self, stream: Stream) {
        let pending = std::mem::take(&mut self.pending[stream_index(stream)]);
        self.end_line(stream, &pending, false);
    }

    /// Ends the log with a line from tollgate itself.
    pub(super) fn note(&mut self, text: String) {
        self.note = Some(text);
    }

    /// Keeps the end of a line of `stream` that was in progress: all of it, or what is left
    /// after its pieces. `newline` says whether a newline ended it (an empty line is a line)
    /// or the end of the stream did.
    fn end_line(&mut self, stream: Stream, rest: &[u8], newline: bool) {
        let split = std::mem::replace(&mut self.split[stream_index(stream)], false);
        let something_left = if split || !newline {
            !rest.is_empty()
        } else {
            true
        };
        if something_left {
            self.line(stream, strip_cr(rest), !split);
        }
    }

    /// Adds `bytes` to `stream`'s line in progress, keeping a piece of it as a line of its own
    /// whenever it grows longer than the longest line: the line in progress never holds more
    /// than that, and three bytes to find a character boundary in.
    fn extend_pending(&mut self, stream: Stream, mut bytes: &[u8]) {
        let index = stream_index(stream);
        let max_line = self.max_line();
        let mut pending = std::mem::take(&mut self.pending[index]);
        loop {
            let room = (max_line + 3).saturating_sub(pending.len());
            let taken = room.min(bytes.len());
            pending.extend_from_slice(&bytes[..taken]);
            bytes = &bytes[taken..];
            if pending.len() <= max_line {
                break;
            }
            let end = char_boundary(&pending, max_line);
            self.line(stream, &pending[..end], false);
            self.split[index] = true;
            pending.drain(..end);
        }
        self.pending[index] = pending;
    }

    /// Keeps one line: in the head while it has room, otherwise at the end of the tail,
    /// dropping the tail's oldest lines to make room. `whole` is false for a piece of a line
    /// too long to keep whole, which is never read as a command.
    fn line(&mut self, stream: Stream, text: &[u8], whole: bool) {
        if stream == Stream::Stdout {
            if !whole {
                self.commands.cut_line();
            } else if self.commands.in_heredoc() || input_is_command(text) {
                self.commands.read(&String::from_utf8_lossy(text));
            }
        }
        let cost = text.len() + LINE_COST;
        let tag = match stream {
            Stream::Stdout => STDOUT,
            Stream::Stderr => STDERR,
        };
        if self.head_open {
            if self.head_cost + cost <= self.half {
                self.head.push(tag);
                self.head.extend_from_slice(text);
                self.head.push(b'\n');
                self.head_cost += cost;
                return;
            }
            self.head_open = false;
        }
        // Room first, then the line: the tail never holds more than its half.
        while self.tail_cost + cost > self.half {
            let Some(newline) = self.tail.iter().position(|&b| b == b'\n') else {
                break;
            };
            // The tag, then the text.
            let text_len = newline - 1;
            self.tail.drain(..=newline);
            self.tail_cost -= text_len + LINE_COST;
            self.cut_lines += 1;
            self.cut_bytes += text_len as u64;
        }
        self.tail.push_back(tag);
        self.tail.extend(text);
        self.tail.push_back(b'\n');
        self.tail_cost += cost;
    }

    /// The log so far, lines in progress included, without consuming the capture: what is
    /// left of a program that was cut off.
    pub(super) fn snapshot(&self) -> Vec<LogLine> {
        let mut logs = self.lines();
        for (index, pending) in self.pending.iter().enumerate() {
            if !pending.is_empty() {
                logs.push(LogLine {
                    stream: [Stream::Stdout, Stream::Stderr][index],
                    text: String::from_utf8_lossy(strip_cr(pending)).into_owned(),
                });
            }
        }
        logs
    }

    /// The log (after [`finish`](Self::finish) on both streams) and the commands read. The
    /// lines stay in the capture, for a cut-off that may still come to take its snapshot.
    pub(super) fn complete(&mut self) -> (Vec<LogLine>, Commands) {
        self.commands.end();
        (self.lines(), std::mem::take(&mut self.commands))
    }

    fn lines(&self) -> Vec<LogLine> {
        let (tail_a, tail_b) = self.tail.as_slices();
        let mut logs = Vec::new();
        decode(&self.head, &mut logs);
        if self.cut_lines > 0 {
            logs.push(LogLine {
                stream: Stream::Stdout,
                text: format!(
                    "[tollgate: {} lines ({} bytes) cut here to keep the log within {} bytes]",
                    self.cut_lines,
                    self.cut_bytes,
                    self.half * 2
                ),
            });
        }
        if tail_b.is_empty() {
            decode(tail_a, &mut logs);
        } else {
            decode(&[tail_a, tail_b].concat(), &mut logs);
        }
        if let Some(note) = &self.note {
            logs.push(LogLine {
                stream: Stream::Stdout,
                text: note.clone(),
            });
        }
        logs
    }
}

fn stream_index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

/// `line` without the `\r` of a Windows line ending.
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Where to cut `bytes` at most `max` bytes in: before a UTF-8 character that would straddle
/// the cut, if there is one within the last three bytes.
fn char_boundary(bytes: &[u8], max: usize) -> usize {
    let max = max.min(bytes.len());
    (max.saturating_sub(3)..=max)
        .rev()
        .find(|&i| i == bytes.len() || (bytes[i] & 0b1100_0000) != 0b1000_0000)
        .filter(|&i| i > 0)
        .unwrap_or(max)
}

/// Appends the lines stored in `bytes` (tag, text, newline each) to `logs`, decoding the text
/// as UTF-8 with invalid bytes replaced.
fn decode(bytes: &[u8], logs: &mut Vec<LogLine>) {
    for stored in bytes.split(|&b| b == b'\n') {
        let Some((&tag, text)) = stored.split_first() else {
            continue;
        };
        let stream = if tag == STDERR {
            Stream::Stderr
        } else {
            Stream::Stdout
        };
        logs.push(LogLine {
            stream,
            text: String::from_utf8_lossy(text).into_owned(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(logs: &[LogLine]) -> Vec<&str> {
        logs.iter().map(|l| l.text.as_str()).collect()
    }

    #[test]
    fn lines_arrive_split_anywhere_and_keep_their_streams() {
        let mut capture = Capture::new(1 << 20);
        capture.feed(Stream::Stdout, b"one\ntw");
        capture.feed(Stream::Stderr, b"err\r\n");
        capture.feed(Stream::Stdout, b"o\r\nthree");
        capture.finish(Stream::Stdout);
        capture.finish(Stream::Stderr);
        let (logs, _) = capture.complete();
        assert_eq!(texts(&logs), ["one", "err", "two", "three"]);
        assert_eq!(logs[1].stream, Stream::Stderr);
    }

    #[test]
    fn a_flood_keeps_its_head_and_tail_and_says_what_was_cut() {
        let limit = 8 * 1024;
        let mut capture = Capture::new(limit);
        let total = 10_000;
        for i in 0..total {
            capture.feed(Stream::Stdout, format!("{i}\n").as_bytes());
        }
        capture.finish(Stream::Stdout);
        let (logs, _) = capture.complete();
        let marker = logs
            .iter()
            .position(|l| l.text.starts_with("[tollgate: "))
            .expect("a cut marker");
        let head: Vec<usize> = logs[..marker]
            .iter()
            .map(|l| l.text.parse().unwrap())
            .collect();
        let tail: Vec<usize> = logs[marker + 1..]
            .iter()
            .map(|l| l.text.parse().unwrap())
            .collect();
        assert_eq!(head, (0..head.len()).collect::<Vec<_>>());
        assert_eq!(tail, (total - tail.len()..total).collect::<Vec<_>>());
        let cut = total - head.len() - tail.len();
        let cut_bytes: usize = (head.len()..total - tail.len())
            .map(|i| i.to_string().len())
            .sum();
        assert_eq!(
            logs[marker].text,
            format!(
                "[tollgate: {cut} lines ({cut_bytes} bytes) cut here to keep the log within {limit} bytes]"
            )
        );
        let kept: usize = logs.iter().map(|l| l.text.len() + LINE_COST).sum();
        assert!(kept <= limit + 200, "{kept}");
    }

    #[test]
    fn a_line_costs_its_own_size_while_it_is_captured() {
        let mut capture = Capture::new(64 << 20);
        for _ in 0..100_000 {
            capture.feed(Stream::Stdout, b"y\n");
        }
        // Two bytes of text and newline each, plus a tag: at most twice that with the
        // buffer's growth.
        assert!(
            capture.head.capacity() <= 2 * 3 * 100_000,
            "{}",
            capture.head.capacity()
        );
    }

    #[test]
    fn a_line_longer_than_half_the_limit_is_kept_in_pieces() {
        let limit = MIN_LIMIT;
        let mut capture = Capture::new(limit);
        let long = "é".repeat(10_000);
        capture.feed(Stream::Stdout, long.as_bytes());
        capture.feed(Stream::Stdout, b"\nafter\n");
        capture.finish(Stream::Stdout);
        let (logs, _) = capture.complete();
        assert_eq!(logs.last().map(|l| l.text.as_str()), Some("after"));
        // Cut at character boundaries: no replacement characters.
        assert!(logs.iter().all(|l| !l.text.contains('\u{fffd}')));
        let marker = logs
            .iter()
            .find(|l| l.text.starts_with("[tollgate: "))
            .expect("cut");
        let kept: usize = logs
            .iter()
            .filter(|l| !l.text.starts_with('['))
            .map(|l| l.text.len())
            .sum();
        let cut: usize = marker
            .text
            .split(['(', ' '])
            .nth(4)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(kept + cut, long.len() + "after".len());
    }

    #[test]
    fn an_endless_line_does_not_grow_the_capture() {
        let limit = 64 * 1024;
        let mut capture = Capture::new(limit);
        let chunk = vec![b'x'; 64 * 1024];
        // 4 MiB: 64 times the limit.
        for _ in 0..64 {
            capture.feed(Stream::Stdout, &chunk);
        }
        let held =
            capture.head.capacity() + capture.tail.capacity() + capture.pending[0].capacity();
        assert!(held <= 3 * limit, "{held}");
    }

    #[test]
    fn a_snapshot_includes_the_lines_in_progress() {
        let mut capture = Capture::new(1 << 20);
        capture.feed(Stream::Stdout, b"done\nhalf a li");
        capture.feed(Stream::Stderr, b"progress 50%");
        assert_eq!(
            texts(&capture.snapshot()),
            ["done", "half a li", "progress 50%"]
        );
    }

    #[test]
    fn a_completed_capture_still_gives_its_whole_log_to_a_late_snapshot() {
        // The supervisor completes the capture; a cut-off that comes just after, before it
        // hears that the program finished, snapshots it.
        let mut capture = Capture::new(1 << 20);
        capture.feed(Stream::Stdout, b"::output a=1\nlast words");
        capture.finish(Stream::Stdout);
        let (logs, commands) = capture.complete();
        assert_eq!(texts(&logs), ["::output a=1", "last words"]);
        assert_eq!(commands.outputs["a"], "1");
        assert_eq!(capture.snapshot(), logs);
    }

    #[test]
    fn commands_are_read_as_they_arrive_even_from_lines_that_are_cut() {
        let mut capture = Capture::new(MIN_LIMIT);
        capture.feed(Stream::Stdout, b"::output early=1\n");
        for _ in 0..1_000 {
            capture.feed(Stream::Stdout, b"filler\n");
        }
        capture.feed(Stream::Stderr, b"::output ignored=1\n");
        capture.feed(Stream::Stdout, b"::output late=2");
        capture.finish(Stream::Stdout);
        let (_, commands) = capture.complete();
        assert_eq!(commands.outputs["early"], "1");
        assert_eq!(commands.outputs["late"], "2");
        assert!(!commands.outputs.contains_key("ignored"));
    }

    #[test]
    fn char_boundaries_back_off_over_continuation_bytes() {
        let bytes = "aé".as_bytes(); // a, 0xC3, 0xA9
        assert_eq!(char_boundary(bytes, 2), 1);
        assert_eq!(char_boundary(bytes, 3), 3);
        assert_eq!(char_boundary(b"abc", 2), 2);
        assert_eq!(
            char_boundary(&[0x80; 8], 5),
            5,
            "no boundary near: cut anyway"
        );
    }
}
