//! `dump` prints a topic's records from its segments: offsets, times, the channel's attempts and
//! bodies as text, hex or base64, or JSON lines.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]

mod support;

use support::*;

#[test]
fn dump_prints_the_requested_range_with_bodies_and_attempts() {
    // Goal: what dump prints is what was published. Method: dump a range as JSON lines with
    // billing's attempts, then as hex and base64, and compare with the bodies written.
    let data = tempfile::tempdir().unwrap();
    populate(data.path());
    let dir = path_str(data.path());
    let output = fsck(&[
        "dump",
        dir,
        "--topic",
        TOPIC,
        "--from",
        "55",
        "--count",
        "12",
        "--json",
        "--channel",
        "billing",
    ]);
    assert_eq!(code(&output), 0, "{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<serde_json::Value> =
        stdout(&output).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 12);
    for (n, line) in lines.iter().enumerate() {
        let offset = 55 + n as u64;
        assert_eq!(line["offset"], offset);
        assert_eq!(line["id"], format!("{offset:016x}"));
        assert_eq!(line["body"], String::from_utf8(body(offset)).unwrap());
        assert!(line["timestamp_ns"].as_i64().unwrap() > 1_600_000_000_000_000_000);
        // billing finished 0..50, holds 50..60 in flight (one attempt) and deferred 60..65.
        let expected_attempts = if offset < 65 { 1 } else { 0 };
        assert_eq!(line["attempts"], expected_attempts, "offset {offset}");
        assert_eq!(line["due_ns"].is_null(), !(60..65).contains(&offset), "offset {offset}");
    }
    let hex = stdout(&fsck(&[
        "dump", dir, "--topic", TOPIC, "--from", "7", "--count", "1", "--body", "hex",
    ]));
    let expected: String = body(7).iter().map(|b| format!("{b:02x}")).collect();
    assert!(hex.starts_with("7\t") && hex.trim_end().ends_with(&expected), "{hex}");
    let b64 = stdout(&fsck(&[
        "dump", dir, "--topic", TOPIC, "--from", "8", "--count", "1", "--body", "base64",
    ]));
    use base64::Engine as _;
    assert!(
        b64.trim_end().ends_with(&base64::engine::general_purpose::STANDARD.encode(body(8))),
        "{b64}"
    );
}

#[test]
fn dump_of_a_damaged_segment_skips_the_damage_and_says_where() {
    // Goal: dump reads around damage. Method: flip a body bit of record 3 and dump 0..6.
    let data = tempfile::tempdir().unwrap();
    populate(data.path());
    let (_, path, position, len) = record_positions(data.path()).into_iter().nth(3).unwrap();
    flip_bit(&path, position + len - 1, 1);
    let output = fsck(&["dump", path_str(data.path()), "--topic", TOPIC, "--count", "6"]);
    assert_eq!(code(&output), 1, "damage met: exit 1");
    let offsets: Vec<u64> =
        stdout(&output).lines().map(|l| l.split('\t').next().unwrap().parse().unwrap()).collect();
    assert_eq!(offsets, vec![0, 1, 2, 4, 5, 6]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{len} damaged bytes at position {position}"))
            && stderr.contains(path.to_str().unwrap()),
        "{stderr}"
    );
}
