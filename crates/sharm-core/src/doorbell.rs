//! Cross-process wake-up: the one module that talks to `raw_sync`.
//!
//! A doorbell is a `raw_sync::events::Event` (auto-reset) placed in the header page. Each side
//! sleeps on its own doorbell; the peer rings it only after the sleeper said so through a flag in
//! the ring (see `ring`), so steady traffic never touches it.
//!
//! What we rely on from `raw_sync` 0.1 on Unix: the event is a process-shared pthread mutex plus
//! condition variable plus a "signalled" byte; `set(Signaled)` is remembered until a `wait`
//! consumes it, so a ring that comes before the wait is not lost. What we work around:
//! - a timed `wait` computes its deadline from the wall clock: we only use short timeouts
//!   (100 ms), so a clock step at worst shortens or lengthens one nap;
//! - the mutex is not robust: a process killed while inside `set` or `wait` would leave it locked.
//!   `wait` uses a timed lock and so cannot hang; `ring` is only called on the rare sleep/wake
//!   path. This is a known weakness, documented in the README.

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
        let (event, _) = unsafe { Event::new(mem, true) }
            .map_err(|e| Error::Os(format!("cannot create doorbell: {e}")))?;
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
