//! A block of text between two marker lines inside a user's file (the
//! AGENTS.md resume hook). Upserting touches only the block; removing deletes
//! exactly the block and leaves every other byte of the file as it was.

use crate::workspace::fsio;
use std::path::Path;

/// What upserting a block would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockAction {
    /// The file does not exist and would be created.
    Created,
    /// The block would be appended or replaced.
    Updated,
    /// The block is already identical.
    Unchanged,
    /// The file exists but cannot be read as text (a directory, not UTF-8, too large,
    /// no permission): it is never overwritten.
    Unusable,
}

impl BlockAction {
    /// `created` / `updated` / `unchanged`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Unchanged => "unchanged",
            Self::Unusable => "unusable",
        }
    }
}

fn render(begin: &str, end: &str, body: &str) -> String {
    format!("{begin}\n{}\n{end}\n", body.trim_end_matches('\n'))
}

/// Byte range of the block (from the begin marker to the end of the end marker's line).
/// The block starts at the begin marker closest before the first end marker, so that a
/// stray begin marker earlier in the file (and the user's text after it) is left alone.
fn find(text: &str, begin: &str, end: &str) -> Option<(usize, usize)> {
    let first = text.find(begin)?;
    let end_pos = text[first + begin.len()..].find(end)? + first + begin.len();
    let start = text[..end_pos].rfind(begin)?;
    let end_at = end_pos + end.len();
    let stop = if text[end_at..].starts_with('\n') {
        end_at + 1
    } else {
        end_at
    };
    Some((start, stop))
}

/// What [`upsert`] would do, without writing.
pub fn plan(path: &Path, begin: &str, end: &str, body: &str) -> BlockAction {
    match fsio::read_text_capped(path) {
        Err(fsio::ReadFailure::Missing) => BlockAction::Created,
        Err(fsio::ReadFailure::Unreadable(_)) => BlockAction::Unusable,
        Ok(text) => match find(&text, begin, end) {
            Some((a, b)) if text[a..b] == render(begin, end, body) => BlockAction::Unchanged,
            _ => BlockAction::Updated,
        },
    }
}

/// True when the file holds the block.
pub fn present(path: &Path, begin: &str, end: &str) -> bool {
    fsio::read_text_capped(path).is_ok_and(|t| find(&t, begin, end).is_some())
}

/// The file's new text with the block appended or replaced.
pub fn upserted(existing: Option<&str>, begin: &str, end: &str, body: &str) -> String {
    let block = render(begin, end, body);
    match existing {
        None => block,
        Some(text) => match find(text, begin, end) {
            Some((a, b)) => format!("{}{}{}", &text[..a], block, &text[b..]),
            None if text.is_empty() => block,
            None if text.ends_with('\n') => format!("{text}\n{block}"),
            None => format!("{text}\n\n{block}"),
        },
    }
}

/// The file's text without the block, or `None` when there is no block.
pub fn removed(text: &str, begin: &str, end: &str) -> Option<String> {
    let (a, b) = find(text, begin, end)?;
    Some(format!("{}{}", &text[..a], &text[b..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_then_remove_restores_the_file() {
        let original = "# Project\n\nnotes\n";
        let with = upserted(Some(original), "<!-- b -->", "<!-- e -->", "hook");
        assert!(with.contains("<!-- b -->\nhook\n<!-- e -->\n"));
        let back = removed(&with, "<!-- b -->", "<!-- e -->").unwrap();
        assert_eq!(back, "# Project\n\nnotes\n\n");
        let again = upserted(Some(&with), "<!-- b -->", "<!-- e -->", "hook2");
        assert_eq!(again.matches("<!-- b -->").count(), 1);
        assert!(again.contains("hook2"));
    }

    #[test]
    fn a_stray_begin_marker_and_the_text_after_it_survive() {
        let original = "# Notes\n<!-- b -->\nmine\n";
        let with = upserted(Some(original), "<!-- b -->", "<!-- e -->", "hook");
        assert!(with.starts_with(original));
        let again = upserted(Some(&with), "<!-- b -->", "<!-- e -->", "hook2");
        assert!(
            again.starts_with(original) && again.contains("hook2") && !again.contains("hook\n")
        );
        assert_eq!(
            removed(&again, "<!-- b -->", "<!-- e -->").unwrap(),
            format!("{original}\n")
        );
    }
}
