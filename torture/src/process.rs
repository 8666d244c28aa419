//! nsqd as a child process: started on loopback ports it picks itself, killed with SIGKILL or
//! stopped with SIGTERM, measured through `/proc`.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};

/// How to start nsqd: a program and the arguments before nsqd's own flags.
#[derive(Debug, Clone)]
pub struct Launcher {
    pub program: PathBuf,
    pub prefix_args: Vec<OsString>,
}

impl Launcher {
    /// nsqd carried by an `nsq-torture` binary (`nsq-torture nsqd FLAGS`).
    pub fn embedded(torture_binary: impl Into<PathBuf>) -> Self {
        Self { program: torture_binary.into(), prefix_args: vec!["nsqd".into()] }
    }

    /// The `nsq-torture` binary running now, as nsqd.
    pub fn this_binary() -> anyhow::Result<Self> {
        Ok(Self::embedded(std::env::current_exe().context("finding this program")?))
    }

    /// A separate nsqd binary (ours, or Go's for comparison).
    pub fn binary(path: impl Into<PathBuf>) -> Self {
        Self { program: path.into(), prefix_args: Vec::new() }
    }

    /// Starts nsqd on `data` with TCP and HTTP on free loopback ports, and waits until both
    /// listen. `extra` are more nsqd flags.
    pub fn start(&self, data: &Path, extra: &[String]) -> anyhow::Result<NsqdProcess> {
        let mut child = Command::new(&self.program)
            .args(&self.prefix_args)
            .args(["--tcp-address=127.0.0.1:0", "--http-address=127.0.0.1:0"])
            .arg(format!("--data-path={}", data.display()))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))?;
        let stderr = child.stderr.take().context("nsqd's stderr")?;
        let (sender, receiver) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&log);
        // Drain stderr for the child's whole life, so it never blocks on a full pipe; keep the
        // last lines for error reports.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                for (prefix, kind) in [("TCP: listening on ", 0), ("HTTP: listening on ", 1)] {
                    if let Some(at) = line.find(prefix)
                        && let Ok(addr) = line[at + prefix.len()..].trim().parse::<SocketAddr>()
                    {
                        let _ = sender.send((kind, addr));
                    }
                }
                let mut log = kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if log.len() == LOG_LINES_KEPT {
                    log.remove(0);
                }
                log.push(line);
            }
        });
        let mut process = NsqdProcess { child, tcp: None, http: None, log };
        while process.tcp.is_none() || process.http.is_none() {
            match receiver.recv_timeout(Duration::from_secs(60)) {
                Ok((0, addr)) => process.tcp = Some(addr),
                Ok((_, addr)) => process.http = Some(addr),
                Err(_) => {
                    let status = process.child.try_wait().ok().flatten();
                    bail!(
                        "nsqd did not start listening (exit status {status:?}); its last lines:\n{}",
                        process.last_log_lines()
                    );
                }
            }
        }
        Ok(process)
    }
}

const LOG_LINES_KEPT: usize = 50;

/// A running nsqd child. Dropping it kills it.
#[derive(Debug)]
pub struct NsqdProcess {
    child: Child,
    tcp: Option<SocketAddr>,
    http: Option<SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
}

impl NsqdProcess {
    /// The TCP (protocol V2) address.
    pub fn tcp(&self) -> SocketAddr {
        self.tcp.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The HTTP address.
    pub fn http(&self) -> SocketAddr {
        self.http.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines nsqd wrote to stderr.
    pub fn last_log_lines(&self) -> String {
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).join("\n")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Resident set size in bytes, from `/proc/PID/status`.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .context("no VmRSS line in /proc/PID/status")?;
        let kib: u64 = line.trim().trim_end_matches("kB").trim().parse()?;
        Ok(kib * 1024)
    }

    /// SIGKILL, and reap it.
    pub fn kill9(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM (a clean shutdown), and wait for the exit.
    pub fn terminate(mut self) -> anyhow::Result<ExitStatus> {
        let pid = self.child.id();
        let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
        if !status.success() {
            bail!("kill -TERM {pid} failed");
        }
        Ok(self.child.wait()?)
    }
}

impl Drop for NsqdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
