//! nsqlookupd's command line (NSQ.md §4.1): NSQ's flag names, defaults and syntax, and
//! `--config` files with the same keys as nsqlookupd's (the flag name with `_`).

use std::ffi::OsString;
use std::time::Duration;

use clap::Parser;

use crate::options::{DaemonFlags, parse_duration, parse_with_config};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "nsqlookupd",
    disable_version_flag = true,
    about = "nsqlookupd: the directory service of an NSQ cluster",
    mut_arg("log_prefix", |arg| arg.default_value("[nsqlookupd] "))
)]
pub struct LookupdOptions {
    #[command(flatten)]
    pub daemon: DaemonFlags,

    /// <addr>:<port> to listen on for TCP clients
    #[arg(long, default_value = "0.0.0.0:4160")]
    pub tcp_address: String,
    /// <addr>:<port> to listen on for HTTP clients
    #[arg(long, default_value = "0.0.0.0:4161")]
    pub http_address: String,
    /// address of this lookupd node, (default to the OS hostname)
    #[arg(long)]
    pub broadcast_address: Option<String>,

    /// duration of time a producer will remain in the active list since its last ping
    #[arg(long, default_value = "5m0s", value_parser = parse_duration)]
    pub inactive_producer_timeout: Duration,
    /// duration of time a producer will remain tombstoned if registration remains
    #[arg(long, default_value = "45s", value_parser = parse_duration)]
    pub tombstone_lifetime: Duration,
}

impl LookupdOptions {
    /// Parses nsqlookupd's command line (the program name first) and the config file it names.
    pub fn parse_args<I, T>(args: I) -> anyhow::Result<LookupdOptions>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        parse_with_config(args, &[])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<LookupdOptions> {
        LookupdOptions::parse_args(std::iter::once("nsqlookupd").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_are_nsqlookupds() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.tcp_address, "0.0.0.0:4160");
        assert_eq!(o.http_address, "0.0.0.0:4161");
        assert_eq!(o.broadcast_address, None);
        assert_eq!(o.inactive_producer_timeout, Duration::from_secs(300));
        assert_eq!(o.tombstone_lifetime, Duration::from_secs(45));
        assert_eq!(o.daemon.log_prefix, "[nsqlookupd] ");
        assert!(!o.daemon.verbose && !o.daemon.version);
    }

    #[test]
    fn go_syntax_and_the_config_file_are_read() {
        let o = parse(&["-tombstone-lifetime", "1m", "--verbose", "-broadcast-address=h"]).unwrap();
        assert_eq!(o.tombstone_lifetime, Duration::from_secs(60));
        assert_eq!(o.broadcast_address.as_deref(), Some("h"));
        assert!(o.daemon.verbose);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nsqlookupd.cfg");
        std::fs::write(&path, "inactive_producer_timeout = 2000\ntcp_address = \"127.0.0.1:1\"\n")
            .unwrap();
        let config = format!("--config={}", path.display());
        let o = parse(&[&config, "--tcp-address=127.0.0.1:2"]).unwrap();
        assert_eq!(o.inactive_producer_timeout, Duration::from_secs(2), "integers are ms");
        assert_eq!(o.tcp_address, "127.0.0.1:2", "the command line wins");
    }

    #[test]
    fn bad_values_are_refused() {
        for args in [&["--tombstone-lifetime=soon"][..], &["--log-level=loud"], &["--nope"]] {
            assert!(parse(args).is_err(), "{args:?}");
        }
    }
}
