//! The binaries' command lines: `--version` in NSQ's form, Go flag syntax, a clear refusal of
//! bad flags and config files; and nsqlookupd serving on the ports it logs until a clean stop
//! on SIGTERM (nsqd's stops are in kill9.rs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const NSQD: &str = env!("CARGO_BIN_EXE_nsqd");
const NSQLOOKUPD: &str = env!("CARGO_BIN_EXE_nsqlookupd");

/// Runs `binary` to its end in an empty directory, so a start that goes too far writes nothing
/// here.
fn run(binary: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let output =
        Command::new(binary).args(args).current_dir(dir.path()).output().expect("run binary");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    let failed = !output.status.success();
    assert!(left.is_empty() || !failed, "{binary} {args:?} failed after writing {left:?}");
    output
}

/// `--config=<dir>/<name>`, naming a file written there that is not TOML.
fn broken_config(dir: &Path, name: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, "log_level = [").unwrap();
    format!("--config={}", path.display())
}

#[test]
fn version_prints_the_daemons_line_and_exits_0() {
    // Goal: `--version` and Go's `-version` print `nsqd vX.Y.Z (built w/...)` or `nsqlookupd
    // vX.Y.Z (built w/...)`, one line. Method: run both flags on both binaries.
    for (binary, name) in [(NSQD, "nsqd"), (NSQLOOKUPD, "nsqlookupd")] {
        for flag in ["--version", "-version"] {
            let output = run(binary, &[flag]);
            assert!(output.status.success(), "{name} {flag}");
            let text = String::from_utf8(output.stdout).unwrap();
            assert!(text.starts_with(&format!("{name} v1.3.0 (built w/")), "{text}");
            assert_eq!(text.lines().count(), 1);
        }
    }
}

#[test]
fn bad_flags_and_config_files_are_refused_with_a_message() {
    // Goal: nothing misconfigured starts, or touches a data directory. Method: for nsqd an
    // unknown flag, a bad duration, an out-of-range node id, an unsupported feature and
    // unusable TLS files; for nsqlookupd an unknown flag, bad durations, a bad log level and
    // an address it cannot listen on; for both a config file that does not parse. Each exits
    // non-zero naming the problem (a file by its name), having written nothing.
    let dir = tempfile::tempdir().unwrap();
    let nsqd_config = broken_config(dir.path(), "nsqd.cfg");
    let lookupd_config = broken_config(dir.path(), "nsqlookupd.cfg");
    for (binary, args, needle) in [
        (NSQD, &["--no-such-flag"][..], "no-such-flag"),
        (NSQD, &["-msg-timeout", "soon"], "soon"),
        (NSQD, &["--node-id=5000"], "5000"),
        (NSQD, &["--statsd-address=127.0.0.1:8125"], "statsd-address"),
        (NSQD, &["--tls-cert=cert.pem"], "--tls-cert and --tls-key"),
        (NSQD, &["--tls-cert=cert.pem", "--tls-key=key.pem"], "cert.pem"),
        (NSQD, &[nsqd_config.as_str()], "failed to load config file"),
        (NSQD, &[nsqd_config.as_str()], "nsqd.cfg"),
        (NSQLOOKUPD, &["--no-such-flag"], "no-such-flag"),
        (NSQLOOKUPD, &["-tombstone-lifetime", "soon"], "soon"),
        (NSQLOOKUPD, &["--inactive-producer-timeout=1x"], "1x"),
        (NSQLOOKUPD, &["--log-level=loud"], "loud"),
        (
            NSQLOOKUPD,
            &["--tcp-address=127.0.0.1:0", "--http-address=nowhere"],
            "listen (nowhere) failed",
        ),
        (NSQLOOKUPD, &[lookupd_config.as_str()], "nsqlookupd.cfg"),
    ] {
        let output = run(binary, args);
        assert!(!output.status.success(), "{binary} {args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{binary} {args:?}: {stderr}");
    }
}

/// A child process that a failing test does not leave running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn nsqlookupd_logs_its_real_ports_serves_and_stops_cleanly_on_sigterm() {
    // Goal: started with port 0, the binary logs `TCP: listening on ADDR` and `HTTP:
    // listening on ADDR` with the real ports, in nsqlookupd's log shape, serves on them, and
    // exits 0 on SIGTERM. Method: read its stderr until both lines, PING it over TCP, signal.
    let child = Command::new(NSQLOOKUPD)
        .args(["--tcp-address=127.0.0.1:0", "--http-address=127.0.0.1:0", "-verbose"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn nsqlookupd");
    let mut child = KillOnDrop(child);
    let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let mut listening = |prefix: &str| -> SocketAddr {
        for line in lines.by_ref() {
            let line = line.unwrap();
            assert!(line.starts_with("[nsqlookupd] "), "{line}");
            if let Some(at) = line.find(prefix) {
                return line[at + prefix.len()..].trim().parse().unwrap();
            }
        }
        panic!("nsqlookupd ended before logging {prefix:?}");
    };
    let tcp = listening("TCP: listening on ");
    let http = listening("HTTP: listening on ");
    assert!(tcp.port() != 0 && http.port() != 0 && tcp != http);

    let mut stream = std::net::TcpStream::connect(tcp).unwrap();
    stream.write_all(b"  V1PING\n").unwrap();
    let mut reply = [0u8; 6];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"\0\0\0\x02OK");
    drop(stream);

    let signalled = Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status();
    assert!(signalled.unwrap().success());
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
