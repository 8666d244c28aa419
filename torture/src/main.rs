//! `nsq-torture`: reliability harnesses for nsqd (docs/RELIABILITY.md).
//!
//! `nsq-torture nsqd [FLAGS]` runs nsqd itself, so that the harnesses have a real process to kill
//! without depending on where another package's binary was built.

use std::ffi::OsString;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "nsqd") {
        return server::nsqd::main(args.into_iter().skip(1));
    }
    eprintln!("usage: nsq-torture nsqd [NSQD FLAGS]");
    ExitCode::from(16)
}
