//! Running the pynsq scripts: the interpreter from `NSQ_INTEROP_PYTHON` (default `python3`),
//! which must have pynsq installed; `bash .ci/run` makes such a Python in
//! `target/interop-venv` and sets the variable.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

pub fn python() -> String {
    std::env::var("NSQ_INTEROP_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// A script of `interop/tests/`.
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join(name)
}

/// Fails the test, with the way to fix it, unless the interpreter can import pynsq and
/// python-snappy.
pub async fn require_pynsq() {
    let python = python();
    let help = "pynsq is needed for this test: run `bash .ci/run`, which installs it into \
                target/interop-venv and sets NSQ_INTEROP_PYTHON; after that, \
                `NSQ_INTEROP_PYTHON=$PWD/target/interop-venv/bin/python cargo test -p nsq-interop` \
                also works alone. Or point NSQ_INTEROP_PYTHON at any Python with \
                `pip install pynsq==0.9.1 python-snappy==0.7.3`.";
    let probe = Command::new(&python)
        .args(["-c", "import nsq, tornado, snappy; print(nsq.__version__, tornado.version)"])
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(Duration::from_secs(30), probe).await {
        Ok(Ok(output)) => output,
        Ok(Err(error)) => panic!("cannot run Python {python:?} ({error}). {help}"),
        Err(_) => panic!("Python {python:?} did not answer within 30 s. {help}"),
    };
    assert!(
        output.status.success(),
        "Python {python:?} cannot `import nsq`: {}\n{help}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// Runs `script` (its arguments already given), allowing it `timeout` and a little more
/// before killing it; asserts it succeeded and returns its stdout lines and a context text
/// (stdout and stderr) for assertion messages.
pub async fn run(script: &mut Command, timeout: Duration) -> (Vec<String>, String) {
    let run = script.stdin(Stdio::null()).kill_on_drop(true).output();
    let output = tokio::time::timeout(timeout + Duration::from_secs(15), run)
        .await
        .expect("the script outlived its own timeout")
        .expect("run the script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let context = format!("--- stdout ---\n{stdout}--- stderr ---\n{stderr}");
    assert!(output.status.success(), "the script failed ({}):\n{context}", output.status);
    (stdout.lines().map(str::to_owned).collect(), context)
}
