//! The nsqd binary's command line: `--version` in nsqd's form, Go flag syntax, and a clear
//! refusal of bad flags.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

/// Runs nsqd in an empty directory, so a start that goes too far writes nothing here.
fn nsqd(args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_nsqd"))
        .args(args)
        .current_dir(dir.path())
        .output()
        .expect("run nsqd");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty() || output.status.success(), "{args:?} failed after writing {left:?}");
    output
}

#[test]
fn version_prints_nsqds_line_and_exits_0() {
    // Goal: `--version` and Go's `-version` print `nsqd vX.Y.Z (built w/...)`. Method: run both.
    for flag in ["--version", "-version"] {
        let output = nsqd(&[flag]);
        assert!(output.status.success());
        let text = String::from_utf8(output.stdout).unwrap();
        assert!(text.starts_with("nsqd v1.3.0 (built w/"), "{text}");
        assert_eq!(text.lines().count(), 1);
    }
}

#[test]
fn bad_flags_and_values_are_refused_with_a_message() {
    // Goal: nothing misconfigured starts, or touches a data directory. Method: an unknown
    // flag, a bad duration, an out-of-range node id, an unsupported feature and unusable TLS
    // files each exit non-zero naming the problem, having written nothing.
    for (args, needle) in [
        (&["--no-such-flag"][..], "no-such-flag"),
        (&["-msg-timeout", "soon"], "soon"),
        (&["--node-id=5000"], "5000"),
        (&["--statsd-address=127.0.0.1:8125"], "statsd-address"),
        (&["--tls-cert=cert.pem"], "--tls-cert and --tls-key"),
        (&["--tls-cert=cert.pem", "--tls-key=key.pem"], "cert.pem"),
    ] {
        let output = nsqd(args);
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn a_config_file_that_does_not_parse_stops_the_start() {
    // Goal: a broken --config is fatal, with the file named. Method: write invalid TOML.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nsqd.cfg");
    std::fs::write(&path, "mem_queue_size = [").unwrap();
    let output = nsqd(&[&format!("--config={}", path.display())]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("failed to load config file") && stderr.contains("nsqd.cfg"),
        "{stderr}"
    );
}
