//! The kill -9 torture program, as CI runs it: 20 short cycles of nsqd under publishers and
//! consumers, SIGKILLed at random moments, then a drain; nothing acknowledged may be lost, nothing
//! corrupt or unexpected delivered. (The checker's own tests, which show that it does see a lost,
//! corrupt, unexpected or duplicate message, are beside it in `src/ledger.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]

use std::process::Command;

#[test]
fn twenty_kill_9_cycles_lose_nothing_acknowledged() {
    // Goal: DESIGN.md §3.4 (items 2 and 4) under repeated SIGKILL, in-flight, requeued and
    // deferred messages included. Method: run the program for 20 cycles on a data directory of
    // the test's own, and read its JSON report. The program stops every nsqd it starts (SIGKILL,
    // or SIGTERM after the drain), and bounds each of its waits.
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let seed = std::env::var("TORTURE_SEED").unwrap_or_else(|_| "20240601".to_owned());
    let output = Command::new(env!("CARGO_BIN_EXE_nsq-torture"))
        .args(["run", "--cycles", "20", "--seed", &seed, "--cycle-ms", "200..900"])
        .arg("--data-path")
        .arg(dir.path().join("data"))
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run nsq-torture");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(output.status.success(), "nsq-torture failed: {:?}\n{stdout}\n{stderr}", output.status);

    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let totals = &report["totals"];
    let count = |field: &str| totals[field].as_u64().unwrap_or_else(|| panic!("totals.{field}"));
    assert_eq!(report["kills"], 20);
    assert_eq!(report["cycles"].as_array().unwrap().len(), 20);
    assert!(count("acked") > 0, "nothing was acknowledged");
    assert!(count("delivered") > 0, "nothing was delivered");
    assert!(count("fin") > 0 && count("req") > 0 && count("touch") > 0 && count("disconnects") > 0);
    assert_eq!((count("lost"), count("corrupt"), count("unexpected")), (0, 0, 0));
    assert_eq!(report["drained"], true, "the drain emptied every channel");
    assert_eq!(report["passed"], true);
    // Every acknowledged message was FINed on both channels at least once.
    assert!(count("fin") >= 2 * count("acked"));
}
