//! Cross-process wake-up: the one module that knows how a side sleeps and is woken.
//!
//! A doorbell lives in the header page. Each side sleeps on its own doorbell; the peer rings it
//! only after the sleeper said so through a flag in the ring (see `ring`), so steady traffic never
//! touches it. Ringing before the sleeper waits is not lost: the next wait returns at once.
//!
//! Linux: a futex word (`FUTEX_WAIT`/`FUTEX_WAKE` on shared memory, without the private flag).
//! It holds no state but the word itself, so a process killed while sleeping or ringing leaves
//! nothing behind, and its timeout runs on the monotonic clock.
//!
//! Windows: a named auto-reset event (`CreateEventW`). The doorbell memory holds a random 64-bit
//! id; both `init` and `attach` create-or-open the event `Local\sharm.bell.<id>`. We do not use
//! `raw_sync`'s Windows event for this: it stores the same kind of id but only its creator may
//! create the event, and a named event lives only while some process holds a handle to it, so the
//! creator dropping its handle before the first attach (which `channel` does: it initialises both
//! doorbells, then attaches) would leave nothing to open.
//!
//! Other Unix systems (macOS): `raw_sync`'s `Event` (auto-reset), a process-shared pthread mutex + condition
//! variable + "signalled" byte. We do not use it on Linux because it does not survive a process
//! that dies inside it: with glibc, a waiter killed in `pthread_cond_timedwait` stays counted in
//! the condition variable, and the next `pthread_cond_signal` can block for good waiting for it to
//! leave. The two-process test that kills and restarts a peer 20 times under traffic hung that
//! way (the surviving side's JS thread stuck in `set`), which is what moved Linux to the futex.
//! Also, raw_sync's timed wait computes its deadline from the wall clock; we only use short
//! timeouts (100 ms), so a clock step at worst shortens or lengthens one nap.

#[cfg(all(unix, not(target_os = "linux")))]
pub use self::event::Doorbell;
#[cfg(target_os = "linux")]
pub use self::futex::Doorbell;
#[cfg(windows)]
pub use self::windows::Doorbell;

#[cfg(target_os = "linux")]
mod futex {
    use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
    use std::time::Duration;

    use crate::error::Error;

    pub struct Doorbell {
        word: *const AtomicU32,
    }

    // SAFETY: the word is an atomic in shared memory that stays mapped while the doorbell lives.
    unsafe impl Send for Doorbell {}
    // SAFETY: as above: every access to the word is an atomic operation or a futex call on it,
    // both made to be used from several threads at once.
    unsafe impl Sync for Doorbell {}

    impl Doorbell {
        /// Initialises a doorbell in zeroed shared memory.
        ///
        /// # Safety
        /// `mem` must point to 4-byte-aligned shared memory that stays mapped while the doorbell
        /// lives.
        pub unsafe fn init(mem: *mut u8) -> Result<Doorbell, Error> {
            // SAFETY: per the caller's contract.
            let d = unsafe { Self::attach(mem)? };
            d.word().store(0, SeqCst);
            Ok(d)
        }

        /// Opens a doorbell another process initialised.
        ///
        /// # Safety
        /// As for [`Doorbell::init`].
        pub unsafe fn attach(mem: *mut u8) -> Result<Doorbell, Error> {
            debug_assert_eq!(mem as usize % 4, 0);
            Ok(Doorbell {
                word: mem as *const AtomicU32,
            })
        }

        fn word(&self) -> &AtomicU32 {
            // SAFETY: see `init`.
            unsafe { &*self.word }
        }

        /// Wakes the side sleeping on this doorbell (or the next wait, if nobody sleeps yet).
        pub fn ring(&self) {
            if self.word().swap(1, SeqCst) == 0 {
                // SAFETY: FUTEX_WAKE on an aligned u32 in a shared mapping; no memory is written.
                unsafe { libc::syscall(libc::SYS_futex, self.word, libc::FUTEX_WAKE, 1, 0usize, 0usize, 0u32) };
            }
        }

        /// Sleeps until rung or until `timeout` passes. Returns `true` when rung.
        pub fn wait(&self, timeout: Duration) -> bool {
            if self.word().swap(0, SeqCst) == 1 {
                return true;
            }
            let ts = libc::timespec {
                tv_sec: timeout.as_secs() as _, // time_t: its libc alias is deprecated on musl
                tv_nsec: timeout.subsec_nanos() as _,
            };
            // SAFETY: FUTEX_WAIT sleeps only while the word is still 0 (no lost wake-up) and reads
            // the timespec we pass; the timeout is relative, on the monotonic clock.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    self.word,
                    libc::FUTEX_WAIT,
                    0u32,
                    &ts as *const libc::timespec,
                    0usize,
                    0u32,
                )
            };
            self.word().swap(0, SeqCst) == 1
        }
    }
}

#[cfg(all(unix, not(target_os = "linux")))]
mod event {
    use std::time::Duration;

    use raw_sync::events::{Event, EventImpl, EventInit, EventState};
    use raw_sync::Timeout;

    use crate::error::Error;
    use crate::layout::DOORBELL_BYTES;

    pub struct Doorbell {
        event: Box<dyn EventImpl>,
    }

    // SAFETY: the event is a process-shared pthread mutex + condvar, which any thread may use.
    unsafe impl Send for Doorbell {}
    // SAFETY: as above: a process-shared mutex and condvar are made to be used by several
    // threads at once; `ring` and `wait` take `&self` and only call into them.
    unsafe impl Sync for Doorbell {}

    impl Doorbell {
        /// Initialises a doorbell in `DOORBELL_BYTES` of zeroed shared memory.
        ///
        /// # Safety
        /// `mem` must point to `DOORBELL_BYTES` bytes that stay mapped while the doorbell lives and
        /// that no other process uses yet.
        pub unsafe fn init(mem: *mut u8) -> Result<Doorbell, Error> {
            let need = Event::size_of(Some(mem));
            assert!(need <= DOORBELL_BYTES, "raw_sync event needs {need} bytes");
            // SAFETY: per the caller's contract.
            let (event, _) =
                unsafe { Event::new(mem, true) }.map_err(|e| Error::Os(format!("cannot create doorbell: {e}")))?;
            Ok(Doorbell { event })
        }

        /// Opens a doorbell another process initialised.
        ///
        /// # Safety
        /// As for [`Doorbell::init`], except that the memory holds an initialised event.
        pub unsafe fn attach(mem: *mut u8) -> Result<Doorbell, Error> {
            // SAFETY: per the caller's contract.
            let (event, _) = unsafe { Event::from_existing(mem) }
                .map_err(|e| Error::Protocol(format!("doorbell in the segment is corrupt: {e}")))?;
            Ok(Doorbell { event })
        }

        /// Wakes the side sleeping on this doorbell (or the next wait, if nobody sleeps yet).
        pub fn ring(&self) {
            let _ = self.event.set(EventState::Signaled);
        }

        /// Sleeps until rung or until `timeout` passes. Returns `true` when rung.
        pub fn wait(&self, timeout: Duration) -> bool {
            self.event.wait(Timeout::Val(timeout)).is_ok()
        }
    }
}

#[cfg(windows)]
mod windows {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
    use std::time::Duration;

    use windows_sys::Win32::Foundation::{CloseHandle, GetLastError, HANDLE, WAIT_OBJECT_0};
    use windows_sys::Win32::System::Threading::{CreateEventW, SetEvent, WaitForSingleObject};

    use crate::error::Error;

    pub struct Doorbell {
        handle: HANDLE,
    }

    // SAFETY: an event handle may be used from any thread; we close it once, in `drop`.
    unsafe impl Send for Doorbell {}
    // SAFETY: as above: `SetEvent` and `WaitForSingleObject` on one handle may run on several
    // threads at once; only `drop` (with `&mut self`) closes it.
    unsafe impl Sync for Doorbell {}

    /// A new nonzero id: randomly keyed hash of the pid, a per-process counter and the time.
    fn fresh_id() -> u64 {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u64(COUNTER.fetch_add(1, SeqCst));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        h.write_u128(now.map_or(0, |d| d.as_nanos()));
        h.finish() | 1
    }

    /// Creates the auto-reset event `Local\sharm.bell.<id>`, or opens it if it exists.
    fn create_or_open(id: u64) -> Result<Doorbell, Error> {
        let name: Vec<u16> = format!("Local\\sharm.bell.{id:016x}")
            .encode_utf16()
            .chain(std::iter::once(0))
            .collect();
        // SAFETY: `name` is a NUL-terminated UTF-16 string that outlives the call; no security
        // attributes (the default: the creator's user); auto-reset, initially not signalled.
        let handle = unsafe { CreateEventW(std::ptr::null(), 0, 0, name.as_ptr()) };
        if handle.is_null() {
            // SAFETY: reads this thread's last error code.
            let code = unsafe { GetLastError() };
            return Err(Error::Os(format!(
                "cannot create or open doorbell event sharm.bell.{id:016x}: Windows error {code}"
            )));
        }
        Ok(Doorbell { handle })
    }

    impl Doorbell {
        /// Initialises a doorbell in zeroed shared memory.
        ///
        /// # Safety
        /// `mem` must point to 8-byte-aligned shared memory that stays mapped while the doorbell
        /// lives.
        pub unsafe fn init(mem: *mut u8) -> Result<Doorbell, Error> {
            debug_assert_eq!(mem as usize % 8, 0);
            let id = fresh_id();
            // SAFETY: per the caller's contract.
            unsafe { &*(mem as *const AtomicU64) }.store(id, SeqCst);
            create_or_open(id)
        }

        /// Opens a doorbell another process initialised.
        ///
        /// # Safety
        /// As for [`Doorbell::init`].
        pub unsafe fn attach(mem: *mut u8) -> Result<Doorbell, Error> {
            debug_assert_eq!(mem as usize % 8, 0);
            // SAFETY: per the caller's contract.
            let id = unsafe { &*(mem as *const AtomicU64) }.load(SeqCst);
            if id == 0 {
                return Err(Error::Protocol(
                    "doorbell in the segment is corrupt: expected a nonzero event id, found 0".into(),
                ));
            }
            create_or_open(id)
        }

        /// Wakes the side sleeping on this doorbell (or the next wait, if nobody sleeps yet).
        pub fn ring(&self) {
            // SAFETY: the handle is a live event handle owned by this doorbell.
            unsafe { SetEvent(self.handle) };
        }

        /// Sleeps until rung or until `timeout` passes. Returns `true` when rung.
        pub fn wait(&self, timeout: Duration) -> bool {
            // Round up to whole milliseconds; stay below INFINITE (u32::MAX).
            let ms = timeout.as_nanos().div_ceil(1_000_000).min(u128::from(u32::MAX - 1)) as u32;
            // SAFETY: the handle is a live event handle owned by this doorbell.
            unsafe { WaitForSingleObject(self.handle, ms) == WAIT_OBJECT_0 }
        }
    }

    impl Drop for Doorbell {
        fn drop(&mut self) {
            // SAFETY: closed exactly once; the event itself lives on while the peer holds it.
            unsafe { CloseHandle(self.handle) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[repr(align(64))]
    struct Mem([u8; crate::layout::DOORBELL_BYTES]);

    #[test]
    fn a_ring_wakes_a_sleeper_and_an_early_ring_is_not_lost() {
        let mem = Box::leak(Box::new(Mem([0; crate::layout::DOORBELL_BYTES])));
        // SAFETY: `mem` is DOORBELL_BYTES of zeroed, 64-byte aligned memory, leaked so that it
        // outlives the doorbell, and nothing else uses it.
        let bell = Arc::new(unsafe { Doorbell::init(mem.0.as_mut_ptr()) }.unwrap());
        assert!(!bell.wait(Duration::from_millis(10)), "nobody rang");
        bell.ring();
        assert!(bell.wait(Duration::from_secs(5)), "a ring before the wait is kept");
        assert!(!bell.wait(Duration::from_millis(10)), "and consumed once");
        let b2 = bell.clone();
        let started = Instant::now();
        let t = std::thread::spawn(move || b2.wait(Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(50));
        bell.ring();
        assert!(t.join().unwrap());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
