//! The catalog: a topic's durable channels and pause states in a small text file beside its
//! segments (FORMAT.md §7), so that the metadata store can be rebuilt should sled be lost
//! (`nsq-fsck rebuild-meta`).
//!
//! ```text
//! # nsq-rs catalog v1: the channels of this topic
//! topic <topic-name>[ paused]
//! channel <channel-name>[ paused]
//! ```

use std::path::Path;

use crate::names::is_valid_name;
use crate::storage::{Storage, read_full_at, write_atomically};

/// Name of the file beside a topic's segments that lists its channels.
pub const CATALOG_FILE_NAME: &str = "CATALOG";
/// The first line of every catalog written now.
const CATALOG_HEADER: &str = "# nsq-rs catalog v1: the channels of this topic";
/// A catalog larger than this is not read: channel names are short and few.
pub const CATALOG_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// What a catalog lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    pub topic: String,
    pub paused: bool,
    /// Durable channels, with their pause state, in the order listed.
    pub channels: Vec<(String, bool)>,
}

/// Why a catalog could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}, line {line}: {reason}")]
    Invalid { path: String, line: usize, reason: String },
}

impl Catalog {
    /// The catalog's text.
    pub fn render(&self) -> String {
        let paused = |p: bool| if p { " paused" } else { "" };
        let mut text = format!("{CATALOG_HEADER}\ntopic {}{}\n", self.topic, paused(self.paused));
        for (name, channel_paused) in &self.channels {
            text.push_str(&format!("channel {name}{}\n", paused(*channel_paused)));
        }
        text
    }

    /// Parses a catalog's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, CatalogError> {
        let invalid = |line: usize, reason: String| CatalogError::Invalid {
            path: path.display().to_string(),
            line,
            reason,
        };
        let mut catalog: Option<Catalog> = None;
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let mut words = line.split(' ');
            let kind = words.next().unwrap_or_default();
            let name = words.next().unwrap_or_default();
            let paused = match words.next() {
                None => false,
                Some("paused") => true,
                Some(other) => return Err(invalid(number, format!("unexpected {other:?}"))),
            };
            if let Some(extra) = words.next() {
                return Err(invalid(number, format!("unexpected {extra:?}")));
            }
            if !is_valid_name(name) {
                return Err(invalid(number, format!("invalid name {name:?}")));
            }
            match (kind, catalog.as_mut()) {
                ("topic", None) => {
                    catalog = Some(Catalog { topic: name.to_owned(), paused, channels: vec![] })
                }
                ("topic", Some(_)) => return Err(invalid(number, "a second topic line".into())),
                ("channel", Some(c)) => c.channels.push((name.to_owned(), paused)),
                ("channel", None) => {
                    return Err(invalid(number, "a channel before the topic line".into()));
                }
                _ => return Err(invalid(number, format!("unknown line kind {kind:?}"))),
            }
        }
        catalog.ok_or_else(|| invalid(0, "no topic line".into()))
    }

    /// Reads the catalog in the topic directory `dir`; `None` when there is none.
    pub fn read(storage: &dyn Storage, dir: &Path) -> Result<Option<Self>, CatalogError> {
        let path = dir.join(CATALOG_FILE_NAME);
        let io = |source| CatalogError::Io { path: path.display().to_string(), source };
        let file = match storage.open(&path, false) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io(error)),
        };
        let len = file.len().map_err(io)?;
        if len > CATALOG_MAX_BYTES {
            let reason = format!("{len} bytes, over the limit of {CATALOG_MAX_BYTES}");
            return Err(CatalogError::Invalid {
                path: path.display().to_string(),
                line: 0,
                reason,
            });
        }
        let mut bytes = vec![0; usize::try_from(len).unwrap_or(0)];
        let got = read_full_at(&*file, &mut bytes, 0).map_err(io)?;
        bytes.truncate(got);
        let text = String::from_utf8(bytes).map_err(|_| CatalogError::Invalid {
            path: path.display().to_string(),
            line: 0,
            reason: "not UTF-8".into(),
        })?;
        Self::parse(&text, &path).map(Some)
    }

    /// Writes the catalog into the topic directory `dir`: to a temporary file, fsynced, renamed
    /// over the old one.
    pub fn write(&self, storage: &dyn Storage, dir: &Path) -> std::io::Result<()> {
        write_atomically(storage, &dir.join(CATALOG_FILE_NAME), self.render().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendered_catalog_parses_back_to_itself() {
        let catalog = Catalog {
            topic: "orders".into(),
            paused: true,
            channels: vec![("billing".into(), false), ("audit".into(), true)],
        };
        let text = catalog.render();
        assert!(text.starts_with("# nsq-rs catalog v1"), "{text}");
        assert_eq!(Catalog::parse(&text, Path::new("CATALOG")).unwrap(), catalog);
    }

    #[test]
    fn damaged_catalog_lines_are_refused_with_their_line_number() {
        for (text, line) in [
            ("topic a\nchannel b sleepy\n", 2),
            ("channel b\ntopic a\n", 1),
            ("topic a\ntopic b\n", 2),
            ("topic a b\n", 1),
            ("# only a comment\n", 0),
            ("topic bad/name\n", 1),
            ("topic a\nqueue b\n", 2),
        ] {
            match Catalog::parse(text, Path::new("CATALOG")) {
                Err(CatalogError::Invalid { line: got, .. }) => assert_eq!(got, line, "{text:?}"),
                other => panic!("{text:?} gave {other:?}"),
            }
        }
    }
}
