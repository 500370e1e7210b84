//! Two sides on one core, and no core free (Linux).
//!
//! A process woken through a pipe is woken as a "sync" wake-up: the kernel expects the waker to
//! sleep soon and places the wakee on the waker's core. Two sides that wake each other therefore
//! end up on one core while another one idles, and a side that then spins for its peer holds the
//! core the peer waits for: its spin cannot pay off, and the two go on waking each other.
//!
//! [`after_lost_spin`] is called after a lost spin: one that found nothing, or one during which
//! the kernel gave this thread's core to another thread ([`times_preempted`] changed; its work
//! may then have come only because this thread stopped spinning). It reads `/proc/loadavg`:
//! - More runnable threads than this thread may use cores, in every look for [`FULL_FOR`] (looks
//!   at most [`FULL_GAP`] apart, not counting the time this thread waited for a core between
//!   them): no core is free, and every spin holds one that another thread waits for. It says so
//!   ([`Look::Full`]); the caller stops spinning. One look is not enough: a look comes after a
//!   spin the peer did not answer, often while the peer's collector runs on helper threads, and on
//!   a quiet machine here nearly half the looks found a thread more than cores. Once a look found
//!   the machine full, the caller looks after every spin, lost or not ([`full_so_far`]): spins
//!   that pay off are seldom lost, and on a machine with more runnable threads than cores this
//!   thread waits for a core for longer than [`FULL_GAP`] at a time (here, with three CPU hogs on
//!   two cores, lost spins came a median 10 ms apart).
//! - Otherwise, if the peer's main thread is runnable on the core this thread runs on (so, with the
//!   two on one core, another idles), this thread moves to another of its cores: it takes that
//!   core out of its allowed set and at once puts it back (the kernel moves a thread that runs
//!   where it may not; afterwards the thread may run anywhere it could before, and stays where it
//!   is until the kernel has a reason to move it).

/// A thread looks at most this often (a look reads two files of `/proc`, about 10 µs each).
#[cfg(target_os = "linux")]
const LOOK_EVERY: std::time::Duration = std::time::Duration::from_millis(1);

/// The machine counts as full once this thread's looks found more runnable threads than cores
/// for this long, each look at most [`FULL_GAP`] after the one before.
#[cfg(target_os = "linux")]
const FULL_FOR: std::time::Duration = std::time::Duration::from_millis(10);
#[cfg(target_os = "linux")]
const FULL_GAP: std::time::Duration = std::time::Duration::from_millis(3);

#[cfg(target_os = "linux")]
thread_local! {
    /// When this thread last looked.
    static LAST_LOOK: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
    /// Since when this thread's looks found the machine full, when the last of them was, and
    /// how long this thread had waited for a core by then ([`waited_for_core`]).
    static FULL_SINCE: std::cell::Cell<Option<FullSince>> = const { std::cell::Cell::new(None) };
}

#[cfg(target_os = "linux")]
#[derive(Clone, Copy)]
struct FullSince {
    since: std::time::Instant,
    last: std::time::Instant,
    waited: Option<std::time::Duration>,
}

/// Whether this thread's last look found the machine full: it then looks after every spin.
pub fn full_so_far() -> bool {
    #[cfg(target_os = "linux")]
    return FULL_SINCE.with(|f| f.get()).is_some();
    #[cfg(not(target_os = "linux"))]
    false
}

/// What [`after_lost_spin`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// Not looked (looked less than a millisecond ago), or nothing to do.
    Nothing,
    /// The peer waited for this thread's core and another was free: this thread moved.
    Moved,
    /// The machine has more runnable threads than this thread may use cores: no core is free,
    /// so a spin holds one that another thread waits for.
    Full,
}

/// After a lost spin (it found nothing, or this thread lost its core to another while it spun):
/// moves the calling thread off its core if process `peer`'s main thread waits to run there and a
/// core idles (see the module), or says that no core is free. Looks at most once a millisecond.
#[cfg(target_os = "linux")]
pub fn after_lost_spin(peer: u32) -> Look {
    let now = std::time::Instant::now();
    if LAST_LOOK.with(|l| l.get().is_some_and(|t| now.duration_since(t) < LOOK_EVERY)) {
        return Look::Nothing;
    }
    LAST_LOOK.with(|l| l.set(Some(now)));
    let Some(allowed) = allowed_cores() else {
        return Look::Nothing;
    };
    // SAFETY: CPU_COUNT reads the set.
    let cores = unsafe { libc::CPU_COUNT(&allowed) } as u32;
    let Some(running) = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .as_deref()
        .and_then(runnable)
    else {
        return Look::Nothing;
    };
    if running > cores {
        let waited = waited_for_core();
        let since = match FULL_SINCE.with(|f| f.get()) {
            Some(f) if apart(f, now, waited) <= FULL_GAP => f.since,
            _ => now,
        };
        FULL_SINCE.with(|f| {
            f.set(Some(FullSince {
                since,
                last: now,
                waited,
            }))
        });
        return if now.duration_since(since) >= FULL_FOR {
            Look::Full
        } else {
            Look::Nothing
        };
    }
    FULL_SINCE.with(|f| f.set(None));
    match peer_waits_here(peer) {
        Some(here) if move_off(here, &allowed).is_some() => Look::Moved,
        _ => Look::Nothing,
    }
}

#[cfg(not(target_os = "linux"))]
pub fn after_lost_spin(_peer: u32) -> Look {
    Look::Nothing
}

/// How far apart a look at `now` is from the last full one, `f`, not counting the time this thread
/// waited for a core in between (`waited` now: [`waited_for_core`]).
#[cfg(target_os = "linux")]
fn apart(f: FullSince, now: std::time::Instant, waited: Option<std::time::Duration>) -> std::time::Duration {
    let gap = now.duration_since(f.last);
    match (f.waited, waited) {
        (Some(before), Some(after)) => gap.saturating_sub(after.saturating_sub(before)),
        _ => gap,
    }
}

/// How long the calling thread has waited, runnable, for a core in all (the second field of
/// `/proc/thread-self/schedstat`); `None` where the kernel does not say.
#[cfg(target_os = "linux")]
fn waited_for_core() -> Option<std::time::Duration> {
    let line = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    schedstat_wait(&line)
}

/// The time waited for a core in a `schedstat` line (`<ns on a core> <ns waiting> <slices>`).
#[cfg(target_os = "linux")]
fn schedstat_wait(line: &str) -> Option<std::time::Duration> {
    Some(std::time::Duration::from_nanos(
        line.split_ascii_whitespace().nth(1)?.parse().ok()?,
    ))
}

/// How many times the kernel has taken the calling thread's core from it while it could run
/// (involuntary context switches); `None` where it cannot say.
pub fn times_preempted() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getrusage fills the zeroed struct it is given.
        unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            (libc::getrusage(libc::RUSAGE_THREAD, &mut usage) == 0).then_some(usage.ru_nivcsw as u64)
        }
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// The core this thread runs on, if process `peer`'s main thread is runnable there.
#[cfg(target_os = "linux")]
fn peer_waits_here(peer: u32) -> Option<i32> {
    // SAFETY: sched_getcpu has no arguments; it fails only where the kernel cannot say.
    let here = unsafe { libc::sched_getcpu() };
    if here < 0 || peer == 0 {
        return None;
    }
    let stat = crate::liveness::main_thread_stat(peer)?;
    (waits_on(&stat)? == here).then_some(here)
}

/// The cores this thread may run on.
#[cfg(target_os = "linux")]
fn allowed_cores() -> Option<libc::cpu_set_t> {
    // SAFETY: a zeroed cpu_set_t is an empty set; the call gets its real size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        (libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0).then_some(set)
    }
}

/// Moves this thread off core `here` to another of `allowed` (its allowed set), which it has
/// again afterwards. Returns the core it moved to (`None`: it could not move).
#[cfg(target_os = "linux")]
fn move_off(here: i32, allowed: &libc::cpu_set_t) -> Option<i32> {
    let size = std::mem::size_of::<libc::cpu_set_t>();
    let mut elsewhere = *allowed;
    // SAFETY: the sets are whole cpu_set_t values; sched_setaffinity returns once this thread
    // runs on a core of the set it was given.
    unsafe {
        libc::CPU_CLR(here as usize, &mut elsewhere);
        if libc::CPU_COUNT(&elsewhere) == 0 || libc::sched_setaffinity(0, size, &elsewhere) != 0 {
            return None;
        }
        let there = libc::sched_getcpu();
        libc::sched_setaffinity(0, size, allowed);
        Some(there)
    }
}

/// The core a thread is runnable on, from its `stat` line: field 39 (the core it last ran on)
/// when field 3, the state, is `R`; `None` otherwise.
#[cfg(target_os = "linux")]
fn waits_on(stat: &str) -> Option<i32> {
    let mut fields = crate::liveness::stat_fields(stat)?;
    if fields.next()? != "R" {
        return None;
    }
    fields.nth(35)?.parse().ok()
}

/// Threads runnable on the machine now, from `/proc/loadavg` (its fourth field, `running/all`).
#[cfg(target_os = "linux")]
fn runnable(loadavg: &str) -> Option<u32> {
    loadavg.split_ascii_whitespace().nth(3)?.split('/').next()?.parse().ok()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::process::{Child, Command};
    use std::time::Duration;

    #[test]
    fn the_core_of_a_runnable_thread_and_the_runnable_count_are_read_from_proc_lines() {
        let line = |state: &str| {
            let mut f: Vec<String> = (3..=52).map(|i| i.to_string()).collect();
            f[0] = state.to_string();
            format!("4242 (a (b) c) {}", f.join(" "))
        };
        assert_eq!(waits_on(&line("R")), Some(39));
        assert_eq!(waits_on(&line("S")), None);
        assert_eq!(waits_on("garbage"), None);
        assert_eq!(runnable("2.38 2.41 2.21 3/77 29807\n"), Some(3));
        assert_eq!(runnable("2.38 2.41"), None);
        assert!(runnable(&std::fs::read_to_string("/proc/loadavg").unwrap()).unwrap() >= 1);
        assert_eq!(schedstat_wait("324664 1500 2\n"), Some(Duration::from_nanos(1500)));
        assert_eq!(schedstat_wait("324664"), None);
        assert!(waited_for_core().is_some());
    }

    /// Pins thread or process `pid` (0: this thread) to `cores`.
    fn pin(pid: u32, cores: &[usize]) {
        // SAFETY: a zeroed set, then the cores set in it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &c in cores {
                libc::CPU_SET(c, &mut set);
            }
            let r = libc::sched_setaffinity(pid as libc::pid_t, std::mem::size_of::<libc::cpu_set_t>(), &set);
            assert_eq!(r, 0, "pin {pid} to {cores:?}: {}", std::io::Error::last_os_error());
        }
    }

    struct Spinner(Child);
    impl Drop for Spinner {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn a_thread_whose_peer_waits_for_its_core_moves_to_another_and_keeps_its_allowed_cores() {
        let before = allowed_cores().unwrap();
        // SAFETY: CPU_ISSET and CPU_COUNT read the set.
        let cores: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &before) })
            .collect();
        assert!(
            cores.len() >= 2,
            "this test needs two cores, the thread may use {cores:?}"
        );
        let first = cores[0];
        // A peer that is always runnable, on the first core only.
        let spinner = Spinner(Command::new("sh").args(["-c", "while :; do :; done"]).spawn().unwrap());
        let peer = spinner.0.id();
        pin(peer, &[first]);
        // This thread on that core too, then allowed everywhere again: the kernel may move it
        // away by itself before the look, so it gets a few tries.
        let mut moved = None;
        for _ in 0..50 {
            pin(0, &[first]);
            pin(0, &cores);
            std::thread::sleep(Duration::from_millis(0));
            if let Some(here) = peer_waits_here(peer) {
                assert_eq!(here, first as i32);
                moved = move_off(here, &allowed_cores().unwrap());
                break;
            }
        }
        let there = moved.expect("the peer was never seen waiting for this thread's core, or it could not move");
        assert_ne!(there, first as i32, "it stayed on the peer's core");
        let after = allowed_cores().unwrap();
        // SAFETY: CPU_EQUAL reads both sets.
        assert!(unsafe { libc::CPU_EQUAL(&before, &after) }, "the allowed cores changed");
        assert_ne!(after_lost_spin(0), Look::Moved, "no peer, no move");
    }

    /// Cores this thread may use.
    fn cores() -> Vec<usize> {
        let set = allowed_cores().unwrap();
        // SAFETY: CPU_ISSET reads the set.
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .collect()
    }

    #[test]
    fn looks_that_find_more_runnable_threads_than_cores_for_10_ms_say_no_core_is_free() {
        let n = cores().len();
        let _spinners: Vec<Spinner> = (0..=n)
            .map(|_| Spinner(Command::new("sh").args(["-c", "while :; do :; done"]).spawn().unwrap()))
            .collect();
        // The spinners need a moment to start; then 10 ms of looks a millisecond apart.
        let mut looks = Vec::new();
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(1));
            let look = after_lost_spin(0);
            looks.push(look);
            if look == Look::Full {
                return;
            }
        }
        panic!(
            "{} spinners on {n} cores were never seen as a full machine: {looks:?}",
            n + 1
        );
    }

    #[test]
    fn a_thread_that_shares_its_core_with_a_spinner_counts_its_preemptions() {
        let core = cores()[0];
        let spinner = Spinner(Command::new("sh").args(["-c", "while :; do :; done"]).spawn().unwrap());
        pin(spinner.0.id(), &[core]);
        let all = cores();
        pin(0, &[core]);
        let before = times_preempted().expect("Linux counts involuntary switches");
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(200) {
            std::hint::spin_loop();
        }
        let after = times_preempted().unwrap();
        pin(0, &all);
        assert!(
            after > before,
            "200 ms on a core shared with a spinner, never preempted ({before} -> {after})"
        );
    }
}
