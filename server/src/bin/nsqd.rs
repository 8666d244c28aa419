//! The nsqd binary: see [`server::nsqd::main`].

use std::process::ExitCode;

fn main() -> ExitCode {
    server::nsqd::main(std::env::args_os())
}
