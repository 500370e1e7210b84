//! The event-loop doorbell (Linux): a FIFO per side, next to the segment, that the side's event
//! loop watches, so that the peer's ring wakes the JS thread itself.
//!
//! Why: a side that sleeps on the futex doorbell ([`crate::doorbell`]) is woken in two steps: the
//! kernel wakes its wake-up thread, which then knocks on the event loop (another wake-up). A
//! socket's reader is woken in one. On a machine with no free core each wake-up waits for one, so
//! a round trip that sleeps on both sides cost four where a socket's costs two. With this bell the
//! event loop sleeps in the kernel on the FIFO (`epoll`, like on a socket) and a ring is one
//! `write` of one byte: one wake-up.
//!
//! - Path: `/dev/shm/<os id>@bell-a` (or `-b`). `@` is not a channel-name character, so no
//!   channel's segment has such a name.
//! - The side creates it after it claimed its slot and before it says it is ready, replacing one a
//!   dead predecessor on that side left, with the segment's mode; it opens it read-write and
//!   non-blocking. The read end goes to the event loop (its fd is handed over once, see
//!   [`OwnBell::take_fd`]); holding a write end too, it never reads end-of-file. The side's close
//!   removes it, and so does removing the segment (both sides' bells).
//! - The peer opens it write-only and non-blocking, again for each generation of that side (a new
//!   process on the side made a new FIFO), and writes one byte per ring. A full FIFO (`EAGAIN`)
//!   was rung already. When there is no FIFO or nobody has it open (a side that could not make
//!   one), the write end is not opened and the futex doorbell alone wakes that side: callers ring
//!   both (see `Shared::ring_peer`); the futex ring costs no system call on a side that does not
//!   sleep on it (its word stays rung).
//!
//! Elsewhere (macOS, Windows) there is no bell: [`OwnBell::create`] returns `None` and
//! [`PeerBell::ring`] does nothing.

/// The FIFO of side `side` of the segment `os_id` (`/sharm.<name>`).
#[cfg(target_os = "linux")]
pub fn path(os_id: &str, side: usize) -> String {
    format!("/dev/shm{os_id}@bell-{}", if side == 0 { 'a' } else { 'b' })
}

/// Removes both sides' bells of segment `os_id` (with the segment). Best effort: a bell another
/// user made in the sticky `/dev/shm` stays, and its side's next holder cannot make its own (it
/// then sleeps on the futex doorbell).
pub fn remove_all(os_id: &str) {
    #[cfg(target_os = "linux")]
    for side in 0..2 {
        let _ = std::fs::remove_file(path(os_id, side));
    }
    #[cfg(not(target_os = "linux"))]
    let _ = os_id;
}

/// This side's bell: the read end, until handed to the event loop.
pub struct OwnBell {
    #[cfg(target_os = "linux")]
    path: String,
    #[cfg(target_os = "linux")]
    fd: Option<std::os::fd::OwnedFd>,
}

impl OwnBell {
    /// Makes side `side`'s bell of segment `os_id` with `mode`, replacing a predecessor's. `None`
    /// when it cannot (see the module notes); the side then sleeps on the futex doorbell.
    pub fn create(os_id: &str, side: usize, mode: u32) -> Option<OwnBell> {
        #[cfg(target_os = "linux")]
        {
            use std::ffi::CString;
            use std::os::fd::{FromRawFd, OwnedFd};
            let path = path(os_id, side);
            let c = CString::new(path.clone()).ok()?;
            let _ = std::fs::remove_file(&path);
            // SAFETY: `c` is a NUL-terminated path that outlives both calls.
            let fd = unsafe {
                if libc::mkfifo(c.as_ptr(), 0o600) != 0 {
                    return None;
                }
                libc::open(
                    c.as_ptr(),
                    libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                )
            };
            if fd < 0 {
                let _ = std::fs::remove_file(&path);
                return None;
            }
            // SAFETY: `fd` was just opened and is owned by nothing else.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // mkfifo's mode is masked by the umask; the segment's is set exactly, so is this.
            use std::os::unix::fs::PermissionsExt;
            if std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o777)).is_err() {
                let _ = std::fs::remove_file(&path);
                return None;
            }
            Some(OwnBell { path, fd: Some(fd) })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (os_id, side, mode);
            None
        }
    }

    /// Hands the read end over (once): the caller owns the fd from now on and watches it for
    /// reading; each readable turn means "look at the rings" (the bytes mean nothing).
    pub fn take_fd(&mut self) -> Option<i32> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::IntoRawFd;
            self.fd.take().map(IntoRawFd::into_raw_fd)
        }
        #[cfg(not(target_os = "linux"))]
        None
    }

    /// Removes the bell's name (this side is leaving). The read end, if still ours, closes on drop.
    pub fn remove(&self) {
        #[cfg(target_os = "linux")]
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The write end of the peer's bell, for the peer generation it was opened for.
#[derive(Default)]
pub struct PeerBell {
    #[cfg(target_os = "linux")]
    opened_for: Option<(u32, Option<std::fs::File>)>,
}

impl PeerBell {
    /// Rings side `side`'s bell of segment `os_id`, held by generation `gen` of that side: one
    /// byte, opening the FIFO first if this generation was not rung yet. Does nothing when that
    /// side has no bell.
    pub fn ring(&mut self, os_id: &str, side: usize, gen: u32) {
        #[cfg(target_os = "linux")]
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            if self.opened_for.as_ref().map(|(g, _)| *g) != Some(gen) {
                // ENXIO: nobody has it open for reading (a side without a bell left it, or is dead).
                // Only a FIFO, never through a link: whoever may create files in /dev/shm must not
                // get this process to write into a file of its choosing.
                use std::os::unix::fs::FileTypeExt;
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOFOLLOW)
                    .open(path(os_id, side))
                    .ok()
                    .filter(|f| f.metadata().is_ok_and(|m| m.file_type().is_fifo()));
                self.opened_for = Some((gen, file));
            }
            if let Some((_, Some(f))) = &mut self.opened_for {
                // EAGAIN: full, so it was rung already. EPIPE (no reader left: the process died;
                // SIGPIPE is ignored in Node and in Rust programs): its departure is seen otherwise.
                let _ = f.write(&[1]);
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (os_id, side, gen);
    }

    /// Forgets the write end (this side is leaving).
    pub fn close(&mut self) {
        #[cfg(target_os = "linux")]
        {
            self.opened_for = None;
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn readable(fd: i32) -> usize {
        let mut buf = [0u8; 64];
        // SAFETY: reads into a local buffer of its length from an fd we own (non-blocking).
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        n.max(0) as usize
    }

    #[test]
    fn a_ring_is_a_byte_on_the_bell_of_the_generation_rung() {
        let os_id = format!("/sharm.bell-test-{}", std::process::id());
        let mut own = OwnBell::create(&os_id, 1, 0o600).expect("a FIFO in /dev/shm");
        let fd = own.take_fd().unwrap();
        assert!(own.take_fd().is_none(), "handed over once");
        let mut peer = PeerBell::default();
        peer.ring(&os_id, 1, 7);
        peer.ring(&os_id, 1, 7);
        assert_eq!(readable(fd), 2);
        assert_eq!(readable(fd), 0);
        // A new process on that side makes a new FIFO: the next generation's ring opens it.
        let mut next = OwnBell::create(&os_id, 1, 0o600).unwrap();
        let next_fd = next.take_fd().unwrap();
        peer.ring(&os_id, 1, 8);
        assert_eq!(readable(next_fd), 1);
        assert_eq!(readable(fd), 0, "the old bell is not rung");
        // SAFETY: both fds are ours (taken above) and closed once.
        unsafe {
            libc::close(fd);
            libc::close(next_fd);
        }
        next.remove();
        assert!(!std::path::Path::new(&path(&os_id, 1)).exists());
        // No bell: ringing does nothing (the futex doorbell wakes that side).
        peer.ring(&os_id, 1, 9);
        // Not a FIFO, or a link to a file: never written.
        let decoy = std::env::temp_dir().join(format!("bell-decoy-{}", std::process::id()));
        std::fs::write(&decoy, b"kept").unwrap();
        std::os::unix::fs::symlink(&decoy, path(&os_id, 1)).unwrap();
        peer.ring(&os_id, 1, 10);
        std::fs::remove_file(path(&os_id, 1)).unwrap();
        std::fs::write(path(&os_id, 1), b"kept").unwrap();
        peer.ring(&os_id, 1, 11);
        assert_eq!(std::fs::read(path(&os_id, 1)).unwrap(), b"kept");
        assert_eq!(std::fs::read(&decoy).unwrap(), b"kept");
        std::fs::remove_file(&decoy).unwrap();
        remove_all(&os_id);
    }

    #[test]
    fn the_bell_has_the_mode_asked_for() {
        use std::os::unix::fs::PermissionsExt;
        let os_id = format!("/sharm.bell-mode-{}", std::process::id());
        let own = OwnBell::create(&os_id, 0, 0o660).unwrap();
        let mode = std::fs::metadata(path(&os_id, 0)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o660);
        own.remove();
    }
}
