//! Child processes for tests that need a real process's pid: one that runs a while, or one that
//! has exited (started the way each platform can: there is no `sleep` or `true` on Windows).

use std::process::{Child, Command};

/// A pid no process has: above the largest pid Linux gives (PID_MAX_LIMIT, 2^22).
pub const NO_PID: u32 = 4_194_305;

/// A child that runs about `secs` seconds unless killed.
pub fn running_child(secs: u32) -> Child {
    #[cfg(unix)]
    let child = Command::new("sleep").arg(secs.to_string()).spawn();
    #[cfg(windows)]
    let child = Command::new("ping")
        .args(["-n", &(secs + 1).to_string(), "127.0.0.1"])
        .stdout(std::process::Stdio::null())
        .spawn();
    child.expect("a child process starts")
}

/// The pid of a child that has exited and been reaped: no process has it (until the pid is
/// reused).
pub fn exited_pid() -> u32 {
    let mut child = running_child(0);
    child.wait().expect("the child is reaped");
    child.id()
}
