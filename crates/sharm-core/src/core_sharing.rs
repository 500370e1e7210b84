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
//! - More runnable threads than this thread may use cores, while other processes than this one
//!   and its peer used at least [`FOREIGN_SHARE`] of a core over the last [`MEASURE_FOR`] or more
//!   (the CPU time of the whole machine from `/proc/stat`, less this process's and the peer's):
//!   no core is free, and every spin holds one that another process waits for. It says so
//!   ([`Look::Full`]); the caller stops spinning. The count alone is not enough: on two cores two
//!   sides spinning for each other fill the machine by themselves, and any third thread of theirs
//!   (a collector, a compiler, a wake-up thread) makes the count say full; here nearly half the
//!   looks of a quiet sequential run did, and even the time a side waited for a core said so in
//!   spans of 20 ms (a quarter to half of it, while starting up). What other processes use tells
//!   the two apart: about nothing on a quiet machine, a core per CPU hog on a busy one. It is
//!   measured once per [`MEASURE_FOR`] at most and kept until the next measure. A measure that
//!   cannot finish finds nothing and starts a new one: one older than [`MEASURE_STALE`] (no lost
//!   spin came meanwhile), one of another peer (a server's thread spins for many), one that cannot
//!   read `/proc/stat` or the peer's `/proc/<pid>/stat`. A peer in this process (a worker
//!   thread's channel) is not counted twice.
//! - Otherwise, if the peer's main thread is runnable on the core this thread runs on (so, with the
//!   two on one core, another idles), this thread moves to another of its cores: it takes that
//!   core out of its allowed set and at once puts it back (the kernel moves a thread that runs
//!   where it may not; afterwards the thread may run anywhere it could before, and stays where it
//!   is until the kernel has a reason to move it).

/// A thread looks at most this often (a look reads two files of `/proc`, about 10 µs each).
#[cfg(target_os = "linux")]
const LOOK_EVERY: std::time::Duration = std::time::Duration::from_millis(1);

/// What other processes used is measured over at least this long...
#[cfg(target_os = "linux")]
const MEASURE_FOR: std::time::Duration = std::time::Duration::from_millis(200);
/// ...from a start at most this old (a measure started longer ago starts anew).
#[cfg(target_os = "linux")]
const MEASURE_STALE: std::time::Duration = std::time::Duration::from_secs(1);
/// Other processes load the machine when they used at least this share of a core (numerator,
/// denominator) over a measure.
#[cfg(target_os = "linux")]
const FOREIGN_SHARE: (u32, u32) = (1, 2);

#[cfg(target_os = "linux")]
thread_local! {
    /// When this thread last looked.
    static LAST_LOOK: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
    /// Where the current measure of other processes' CPU time started.
    static MEASURE_START: std::cell::Cell<Option<CpuTimes>> = const { std::cell::Cell::new(None) };
    /// What the last finished measure found: other processes load the machine.
    static FOREIGN_LOAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// CPU time used so far: by the whole machine, by this process, and by the peer's process
/// (`peer_pid`; none when it is 0 or this process).
#[cfg(target_os = "linux")]
#[derive(Clone, Copy)]
struct CpuTimes {
    at: std::time::Instant,
    peer_pid: u32,
    machine: std::time::Duration,
    own: std::time::Duration,
    peer: std::time::Duration,
}

/// What [`after_lost_spin`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// Not looked (looked less than a millisecond ago), or nothing to do.
    Nothing,
    /// The peer waited for this thread's core and another was free: this thread moved.
    Moved,
    /// The machine has more runnable threads than this thread may use cores, and other
    /// processes load it: no core is free, so a spin holds one that another process waits for.
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
    let foreign = foreign_load(now, peer);
    if running > cores {
        return if foreign { Look::Full } else { Look::Nothing };
    }
    match peer_waits_here(peer) {
        Some(here) if move_off(here, &allowed).is_some() => Look::Moved,
        _ => Look::Nothing,
    }
}

#[cfg(not(target_os = "linux"))]
pub fn after_lost_spin(_peer: u32) -> Look {
    Look::Nothing
}

/// Whether other processes than this one and `peer` load the machine, as the last finished
/// measure found (see the module); measures anew when the current one is [`MEASURE_FOR`] old.
/// A measure that cannot finish (too old, its peer changed, `/proc` unreadable) finds nothing.
#[cfg(target_os = "linux")]
fn foreign_load(now: std::time::Instant, peer: u32) -> bool {
    let start = MEASURE_START.with(|m| m.get());
    let due = match start {
        Some(s) => now.duration_since(s.at) >= MEASURE_FOR || s.peer_pid != peer,
        None => true,
    };
    if due {
        let sample = cpu_times(now, peer);
        let verdict = match (start, sample) {
            (Some(s), Some(t)) if s.peer_pid == peer && now.duration_since(s.at) <= MEASURE_STALE => loaded(s, t),
            _ => false,
        };
        FOREIGN_LOAD.with(|f| f.set(verdict));
        MEASURE_START.with(|m| m.set(sample));
    }
    FOREIGN_LOAD.with(|f| f.get())
}

/// Whether other processes than this one and the peer used at least [`FOREIGN_SHARE`] of a core
/// between `a` and `b`.
#[cfg(target_os = "linux")]
fn loaded(a: CpuTimes, b: CpuTimes) -> bool {
    let others = b
        .machine
        .saturating_sub(a.machine)
        .saturating_sub(b.own.saturating_sub(a.own))
        .saturating_sub(b.peer.saturating_sub(a.peer));
    others * FOREIGN_SHARE.1 >= b.at.duration_since(a.at) * FOREIGN_SHARE.0
}

/// The [`CpuTimes`] now; `None` where they cannot be read. A peer of pid 0 (none yet), or in this
/// process (a worker thread's channel), counts as using none.
#[cfg(target_os = "linux")]
fn cpu_times(at: std::time::Instant, peer: u32) -> Option<CpuTimes> {
    let tick = clock_tick()?;
    let machine = machine_busy(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let own = process_cpu(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    let peer_ticks = if peer == 0 || peer == std::process::id() {
        0
    } else {
        process_cpu(&std::fs::read_to_string(format!("/proc/{peer}/stat")).ok()?)?
    };
    let time = |ticks: u64| std::time::Duration::from_nanos(ticks.saturating_mul(tick));
    Some(CpuTimes {
        at,
        peer_pid: peer,
        machine: time(machine),
        own: time(own),
        peer: time(peer_ticks),
    })
}

/// The length of a clock tick in nanoseconds, the unit of `/proc/stat` and of a process's `stat`.
#[cfg(target_os = "linux")]
fn clock_tick() -> Option<u64> {
    // SAFETY: sysconf only reads its argument.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| 1_000_000_000 / hz as u64)
}

/// Ticks the machine's cores were busy, from the first line of `/proc/stat` (`cpu  user nice
/// system idle iowait irq softirq steal ...`): user, nice, system, irq and softirq.
#[cfg(target_os = "linux")]
fn machine_busy(stat: &str) -> Option<u64> {
    let mut f = stat.lines().next()?.split_ascii_whitespace();
    if f.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = f.take(7).map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let [user, nice, system, _idle, _iowait, irq, softirq] = v[..] else {
        return None;
    };
    Some(user + nice + system + irq + softirq)
}

/// Ticks a process ran (user and system time, fields 14 and 15), from its `stat` line.
#[cfg(target_os = "linux")]
fn process_cpu(stat: &str) -> Option<u64> {
    let mut fields = crate::liveness::stat_fields(stat)?;
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
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
        assert_eq!(
            machine_busy("cpu  10 1 5 900 3 2 4 0 0 0\ncpu0 5 0 2 450 1 1 2 0 0 0\n"),
            Some(22)
        );
        assert_eq!(machine_busy("cpu0 10 1 5 900 3 2 4"), None);
        assert_eq!(machine_busy("cpu  10 1"), None);
        let stat = |utime: &str| {
            let mut f: Vec<String> = (3..=52).map(|i| i.to_string()).collect();
            f[11] = utime.to_string();
            format!("4242 (a (b) c) {}", f.join(" "))
        };
        assert_eq!(process_cpu(&stat("40")), Some(40 + 15));
        assert_eq!(process_cpu(&stat("x")), None);
        assert!(cpu_times(std::time::Instant::now(), std::process::id()).is_some());
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
    fn a_spinning_thread_among_more_spinners_than_cores_says_no_core_is_free() {
        let n = cores().len();
        let _spinners: Vec<Spinner> = (0..=n)
            .map(|_| Spinner(Command::new("sh").args(["-c", "while :; do :; done"]).spawn().unwrap()))
            .collect();
        // The spinners need a moment to start; this thread spins between its looks, as a side
        // spinning for its peer does.
        let mut looks = Vec::new();
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            let spin = std::time::Instant::now();
            while spin.elapsed() < Duration::from_micros(1500) {
                std::hint::spin_loop();
            }
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
    fn other_processes_load_the_machine_when_they_used_half_a_core_or_more() {
        let ms = Duration::from_millis;
        let at = std::time::Instant::now();
        let times = |after: u64, machine: u64, own: u64, peer: u64| CpuTimes {
            at: at + ms(after),
            peer_pid: 42,
            machine: ms(machine),
            own: ms(own),
            peer: ms(peer),
        };
        let start = times(0, 1000, 100, 100);
        // 200 ms of two sides each spinning on a core: nothing else ran.
        assert!(!loaded(start, times(200, 1400, 300, 300)));
        // The same with a CPU hog beside them (the machine's cores all busy, the sides less).
        assert!(loaded(start, times(200, 1400, 233, 233)));
        assert!(loaded(start, times(200, 1400, 250, 250)), "half a core");
        assert!(!loaded(start, times(200, 1400, 260, 250)));
    }

    #[test]
    fn a_measure_too_old_or_of_another_peer_finds_nothing_and_starts_anew() {
        let me = std::process::id();
        let start = |ago: Duration, peer_pid: u32| {
            let now = std::time::Instant::now();
            let mut t = cpu_times(now, peer_pid).unwrap();
            t.at = now - ago;
            MEASURE_START.with(|m| m.set(Some(t)));
            FOREIGN_LOAD.with(|f| f.set(true));
        };
        start(Duration::from_secs(5), me);
        assert!(!foreign_load(std::time::Instant::now(), me), "a measure 5 s old");
        start(Duration::from_millis(300), me);
        assert!(!foreign_load(std::time::Instant::now(), 0), "a measure of another peer");
        assert_eq!(MEASURE_START.with(|m| m.get()).unwrap().peer_pid, 0);
        // A measure that is not due keeps the last verdict.
        FOREIGN_LOAD.with(|f| f.set(true));
        assert!(foreign_load(std::time::Instant::now(), 0));
        // This process as its own peer: its CPU time is not taken off twice.
        let t = cpu_times(std::time::Instant::now(), me).unwrap();
        assert_eq!(t.peer, Duration::ZERO);
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
