//! Topic and channel names, validated exactly as NSQ does (`internal/protocol/names.go`): the
//! characters `.`, `_`, `-`, ASCII letters and digits, optionally followed by `#ephemeral`, and at
//! most 64 bytes counting the suffix.

/// Longest topic or channel name, in bytes, `#ephemeral` suffix included.
pub const NAME_MAX_BYTES: usize = 64;

/// The suffix that makes a topic or channel ephemeral: never written to disk.
pub const EPHEMERAL_SUFFIX: &str = "#ephemeral";

/// Whether `name` is a valid topic or channel name.
pub fn is_valid_name(name: &str) -> bool {
    if name.is_empty() || name.len() > NAME_MAX_BYTES {
        return false;
    }
    let base = name.strip_suffix(EPHEMERAL_SUFFIX).unwrap_or(name);
    !base.is_empty()
        && base.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Whether `name` (already valid) names an ephemeral topic or channel.
pub fn is_ephemeral(name: &str) -> bool {
    name.ends_with(EPHEMERAL_SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_nsq_accepts() {
        for name in ["t", "test_topic", "a.b-c_d", "ABC123", "x#ephemeral", &"a".repeat(64)] {
            assert!(is_valid_name(name), "{name}");
        }
        let longest_ephemeral = format!("{}#ephemeral", "a".repeat(54));
        assert_eq!(longest_ephemeral.len(), 64);
        assert!(is_valid_name(&longest_ephemeral));
    }

    #[test]
    fn names_nsq_refuses() {
        let too_long_ephemeral = format!("{}#ephemeral", "a".repeat(55));
        for name in [
            "",
            "#ephemeral",
            "has space",
            "colon:inside",
            "slash/inside",
            "ünicode",
            "x#ephemeral#ephemeral",
            "x#other",
            "x#EPHEMERAL",
            &"a".repeat(65),
            &too_long_ephemeral,
        ] {
            assert!(!is_valid_name(name), "{name:?}");
        }
    }

    #[test]
    fn ephemeral_is_the_suffix() {
        assert!(is_ephemeral("events#ephemeral"));
        assert!(!is_ephemeral("events"));
    }
}
