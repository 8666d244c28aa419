//! Repair killed midway, then run again, reaches the same result as a repair never interrupted.
//!
//! Goal: prove that every step of a repair is atomic on disk and that a rerun picks up where a
//! dead one stopped. Method: damage a data directory in several ways at once; repair one copy
//! without interruption as the reference; then for every step `k` of that repair, run repair on
//! a fresh copy in a child process that dies (abort, like kill -9: no destructor, no flush) just
//! before step `k`, repair that copy again, and compare its segments, quarantine, catalogs and
//! checkpoints with the reference. This file is its own harness: the test binary re-runs itself
//! as the child.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use engine::check::{NoProgress, RepairOptions, repair, survey, verify, worst};
use support::*;

const CHILD_ENV: &str = "REPAIR_KILLED_CHILD";

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (dir, step) = spec.rsplit_once('|').expect("dir|step");
        child(Path::new(dir), step.parse().expect("step"));
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let pristine = work.path().join("pristine");
    populate(&pristine);
    damage(&pristine);

    let reference = work.path().join("reference");
    copy_dir(&pristine, &reference);
    let mut steps = 0;
    let mut count = |_: &engine::check::RepairAction| steps += 1;
    let options = RepairOptions { dry_run: false, before_action: Some(&mut count) };
    repair(&reference, options, &mut NoProgress).expect("reference repair");
    assert!(steps >= 8, "the damage needs several steps to repair, got {steps}");
    let expected = state(&reference);

    for step in 0..steps {
        let dir = work.path().join(format!("killed-{step}"));
        copy_dir(&pristine, &dir);
        let status = Command::new(std::env::current_exe().unwrap())
            .env(CHILD_ENV, format!("{}|{step}", dir.display()))
            .status()
            .unwrap();
        assert!(!status.success(), "the child died before step {step}");
        repair(&dir, RepairOptions::default(), &mut NoProgress).expect("repair after a kill");
        let found = survey(&dir, &mut NoProgress).unwrap();
        let findings = verify(&found);
        assert!(
            worst(&findings) <= Some(engine::check::Severity::Note),
            "step {step}: {findings:?}"
        );
        assert_eq!(state(&dir), expected, "killed before step {step}, then repaired");
    }
    println!("{steps} passed, 0 failed");
}

/// Repairs `dir`, dying just before action `step`.
fn child(dir: &Path, step: usize) {
    let mut seen = 0;
    let mut die = |_: &engine::check::RepairAction| {
        if seen == step {
            std::process::abort();
        }
        seen += 1;
    };
    let options = RepairOptions { dry_run: false, before_action: Some(&mut die) };
    repair(dir, options, &mut NoProgress).expect("repair");
}

/// Several kinds of damage at once: a flipped body bit, a damaged segment header, a deleted
/// segment, a torn tail, a damaged checkpoint and a cursor beyond the log.
fn damage(data_dir: &Path) {
    let positions = record_positions(data_dir);
    let (_, path, position, len) = positions.iter().find(|(o, ..)| *o == 100).unwrap().clone();
    flip_bit(&path, position + len - 1, 0);
    let listing = segments(data_dir);
    flip_bit(&listing[1].1, 3, 5);
    std::fs::remove_file(&listing[2].1).unwrap();
    let (_, last, position, len) = positions.last().unwrap().clone();
    let file = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    file.set_len(position + len - 7).unwrap();
    let meta = engine::meta::MetaStore::open_sled(&data_dir.join("meta")).unwrap();
    meta.put_raw(engine::meta::MetaTree::Channels, b"orders\0billing", b"\x01\0\0\0\0garbage")
        .unwrap();
    let record =
        engine::meta::ChannelRecord { floor: 10, next_read: MESSAGES * 3, ..Default::default() };
    meta.put_channel(TOPIC, "audit", &record).unwrap();
    meta.flush().unwrap();
}

/// What a repair decides: every file of the topics and the quarantine, and the checkpoints.
fn state(data_dir: &Path) -> (BTreeMap<PathBuf, Vec<u8>>, String) {
    let mut files = BTreeMap::new();
    for sub in ["topics", "quarantine"] {
        collect(data_dir, &data_dir.join(sub), &mut files);
    }
    let audit = engine::check::audit_copy(&data_dir.join("meta")).unwrap();
    (files, format!("{:?} {:?} {:?}", audit.topics, audit.channels, audit.deferred))
}

fn collect(root: &Path, dir: &Path, files: &mut BTreeMap<PathBuf, Vec<u8>>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            files.insert(
                path.strip_prefix(root).unwrap().to_path_buf(),
                std::fs::read(&path).unwrap(),
            );
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
