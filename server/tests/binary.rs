//! The binaries' command lines: `--version` in NSQ's form, Go flag syntax, a clear refusal of
//! bad flags and config files; and nsqlookupd serving on the ports it logs until a clean stop
//! on SIGTERM (nsqd's stops are in kill9.rs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
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
    assert!(left.is_empty() || output.status.success(), "{args:?} failed after writing {left:?}");
    output
}

/// The run failed, naming the problem (`needle`) on stderr.
#[track_caller]
fn assert_refused(output: &Output, args: &[&str], needle: &str) {
    assert!(!output.status.success(), "{args:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
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
fn nsqd_refuses_bad_flags_and_values_with_a_message() {
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
        assert_refused(&run(NSQD, args), args, needle);
    }
}

#[test]
fn nsqd_stops_on_a_config_file_that_does_not_parse() {
    // Goal: a broken --config is fatal, with the file named. Method: write invalid TOML.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nsqd.cfg");
    std::fs::write(&path, "mem_queue_size = [").unwrap();
    let config = format!("--config={}", path.display());
    let output = run(NSQD, &[&config]);
    assert_refused(&output, &[&config], "failed to load config file");
    assert_refused(&output, &[&config], "nsqd.cfg");
}

#[test]
fn nsqlookupd_refuses_bad_flags_and_config_files_with_a_message() {
    // Goal: nothing misconfigured starts. Method: an unknown flag, a bad duration, a bad log
    // level, an address it cannot listen on and a config file that does not parse each exit
    // non-zero naming the problem.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nsqlookupd.cfg");
    std::fs::write(&path, "tombstone_lifetime = [").unwrap();
    let config = format!("--config={}", path.display());
    for (args, needle) in [
        (&["--no-such-flag"][..], "no-such-flag"),
        (&["-tombstone-lifetime", "soon"], "soon"),
        (&["--inactive-producer-timeout=1x"], "1x"),
        (&["--log-level=loud"], "loud"),
        (&["--tcp-address=127.0.0.1:0", "--http-address=nowhere"], "listen (nowhere) failed"),
        (&[config.as_str()], "nsqlookupd.cfg"),
    ] {
        assert_refused(&run(NSQLOOKUPD, args), args, needle);
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
