//! Is the process that holds a side still the one that attached?
//!
//! A pid alone can be reused by an unrelated process after the holder died, so a side records
//! the pid and the process start time. On Linux both the state and the start time come from
//! `/proc/<pid>/task/<pid>/stat` (the main thread's entry; fields 3 and 22): a process whose state
//! is `Z` (killed or exited, not yet reaped by its parent) or `X` is dead, and a reused pid has
//! a different start time (clock ticks since boot). `/proc/<pid>/stat` would say the same on a
//! plain kernel, but under qemu-user the emulator answers it for the processes it runs, with a
//! start time that can be one tick off from what other processes read, so two emulated processes
//! would take each other for dead; the task entry is read from the kernel in every case. (A
//! process whose main thread exited while other threads run also shows `Z` there: Node never does
//! that.) On Windows the start time is the creation time from `GetProcessTimes` (100 ns units
//! since 1601), and a process counts as alive while `GetExitCodeProcess` says `STILL_ACTIVE`. On
//! other Unix systems the start time is 0 and only `kill(pid, 0)` is checked (a zombie passes it).

/// Start time of process `pid`, or `None` if there is no such process or it is dead (a zombie).
/// A `stat` entry that exists but cannot be read (out of file descriptors, say) is no proof of
/// death: the process counts as alive, its start time unknown (0).
#[cfg(target_os = "linux")]
pub fn start_time(pid: u32) -> Option<u64> {
    match std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat")) {
        Ok(stat) => parse_stat(&stat),
        Err(e) if gone(&e) => None,
        Err(_) => Some(0),
    }
}

/// A read of `/proc/<pid>/...` failed because the process is not there (or exited meanwhile).
#[cfg(target_os = "linux")]
fn gone(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// The `stat` line of process `pid`'s main thread (`/proc/<pid>/task/<pid>/stat`, see above).
#[cfg(target_os = "linux")]
pub(crate) fn main_thread_stat(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat")).ok()
}

/// The fields of a `stat` line from field 3, the state, on. The command name (field 2) may
/// contain spaces and parentheses: they come after its last ')'.
#[cfg(target_os = "linux")]
pub(crate) fn stat_fields(stat: &str) -> Option<std::str::SplitAsciiWhitespace<'_>> {
    Some(stat[stat.rfind(')')? + 1..].split_ascii_whitespace())
}

/// The start time in a `stat` line of a process that has not died, else `None`.
#[cfg(target_os = "linux")]
fn parse_stat(stat: &str) -> Option<u64> {
    let mut fields = stat_fields(stat)?;
    // starttime is field 22.
    if matches!(fields.next()?, "Z" | "X" | "x") {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

#[cfg(all(unix, not(target_os = "linux")))]
pub fn start_time(pid: u32) -> Option<u64> {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    if r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
        Some(0)
    } else {
        None
    }
}

#[cfg(windows)]
pub fn start_time(pid: u32) -> Option<u64> {
    use windows_sys::Win32::Foundation::{CloseHandle, GetLastError, ERROR_ACCESS_DENIED, FILETIME, STILL_ACTIVE};
    use windows_sys::Win32::System::Threading::{
        GetExitCodeProcess, GetProcessTimes, OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION,
    };

    // SAFETY: OpenProcess only reads its arguments; failure is a null handle.
    let handle = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if handle.is_null() {
        // A process we may not query (another user's, or a protected one) still exists.
        // SAFETY: reads this thread's last error code.
        return (unsafe { GetLastError() } == ERROR_ACCESS_DENIED).then_some(0);
    }
    let mut exit_code = 0u32;
    let (mut created, mut exited, mut kernel, mut user) = (
        FILETIME::default(),
        FILETIME::default(),
        FILETIME::default(),
        FILETIME::default(),
    );
    // SAFETY: `handle` is a process handle opened above with query rights; the out-pointers point
    // to locals; the handle is closed once, here.
    let (code_ok, times_ok) = unsafe {
        let code_ok = GetExitCodeProcess(handle, &mut exit_code) != 0;
        let times_ok = GetProcessTimes(handle, &mut created, &mut exited, &mut kernel, &mut user) != 0;
        CloseHandle(handle);
        (code_ok, times_ok)
    };
    // A process that exited stays queryable while someone holds a handle to it.
    if !code_ok || exit_code != STILL_ACTIVE as u32 {
        return None;
    }
    if !times_ok {
        return Some(0);
    }
    Some((u64::from(created.dwHighDateTime) << 32) | u64::from(created.dwLowDateTime))
}

/// This process's pid and start time.
pub fn current() -> (u32, u64) {
    let pid = std::process::id();
    (pid, start_time(pid).unwrap_or(0))
}

/// Does `pid` still name the process that started at `start`?
pub fn is_alive(pid: u32, start: u64) -> bool {
    match start_time(pid) {
        None => false,
        Some(t) => start == 0 || t == 0 || t == start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let (pid, start) = current();
        assert!(is_alive(pid, start));
        #[cfg(any(target_os = "linux", windows))]
        assert!(!is_alive(pid, start + 1));
    }

    /// Only a missing entry is death: a read that failed for want of resources proves nothing.
    #[cfg(target_os = "linux")]
    #[test]
    fn only_a_missing_proc_entry_means_gone() {
        use std::io::Error;
        assert!(gone(&Error::from_raw_os_error(libc::ENOENT)));
        assert!(gone(&Error::from_raw_os_error(libc::ESRCH)));
        assert!(!gone(&Error::from_raw_os_error(libc::EMFILE)));
        assert!(!gone(&Error::from_raw_os_error(libc::ENOMEM)));
        assert_eq!(start_time(u32::MAX / 2), None, "no such process");
    }

    #[test]
    fn a_reaped_child_is_dead() {
        let mut child = crate::test_process::running_child(5);
        let pid = child.id();
        let start = start_time(pid).expect("a running child has a start time");
        assert!(is_alive(pid, start));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!is_alive(pid, start));
    }

    /// A killed child that its parent (this test) has not waited for yet is a zombie: its pid and
    /// start time are still there, but the process is dead.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_killed_child_not_yet_reaped_is_dead() {
        let mut child = crate::test_process::running_child(5);
        let pid = child.id();
        let start = start_time(pid).expect("a running child has a start time");
        assert!(is_alive(pid, start));
        child.kill().unwrap();
        let stat = format!("/proc/{pid}/task/{pid}/stat");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let s = std::fs::read_to_string(&stat).expect("an unreaped child keeps its /proc entry");
            if s[s.rfind(')').unwrap() + 1..].trim_start().starts_with('Z') {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the killed child never became a zombie: {s}"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let alive = is_alive(pid, start);
        child.wait().unwrap();
        assert!(!alive, "a zombie counted as alive");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn stat_lines_are_parsed_after_the_last_parenthesis_and_dead_states_refused() {
        let line =
            |state: &str| format!("42 (a) b (c)) {state} 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 98765 0 0");
        assert_eq!(parse_stat(&line("S")), Some(98765));
        assert_eq!(parse_stat(&line("R")), Some(98765));
        assert_eq!(parse_stat(&line("Z")), None);
        assert_eq!(parse_stat(&line("X")), None);
        assert_eq!(parse_stat("42 (no fields)"), None);
    }
}
