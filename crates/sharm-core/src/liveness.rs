//! Is the process that holds a side still the one that attached?
//!
//! A pid alone can be reused by an unrelated process after the holder died, so a side records
//! the pid and the process start time. On Linux the start time is field 22 of `/proc/<pid>/stat`
//! (clock ticks since boot), so a reused pid has a different one. On Windows it is the creation
//! time from `GetProcessTimes` (100 ns units since 1601), and a process counts as alive while
//! `GetExitCodeProcess` says `STILL_ACTIVE`. On other Unix systems the start time is 0 and only
//! `kill(pid, 0)` is checked.

/// Start time of process `pid`, or `None` if there is no such process.
#[cfg(target_os = "linux")]
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // Fields after the name start at field 3; starttime is field 22.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
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

    #[test]
    fn a_reaped_child_is_dead() {
        #[cfg(unix)]
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        #[cfg(windows)]
        let mut child = std::process::Command::new("ping")
            .args(["-n", "6", "127.0.0.1"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = start_time(pid).expect("a running child has a start time");
        assert!(is_alive(pid, start));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!is_alive(pid, start));
    }
}
