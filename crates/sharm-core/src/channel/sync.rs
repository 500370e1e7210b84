//! The blocking request: send a request and wait on the calling (driving) thread for its answer.
//!
//! While it waits, this thread drains the incoming ring itself (the wake-up thread is not
//! involved); whatever else arrives is kept for the next poll, in order. It gives up when the
//! peer leaves (the request is cancelled if it has not gone out) or when the timeout passes (the
//! request is cancelled, or the peer is told with a cancel record).
//! How it waits between looks is the wake-up policy's ([`super::wake::IdleWait`]).

use std::time::{Duration, Instant};

use super::wake::IdleWait;
use super::Channel;
use crate::error::Error;
use crate::record::Kind;

impl Channel {
    /// Sends request `id` and blocks the calling thread until its answer arrives, the peer
    /// leaves, or `timeout` passes. Everything else that arrives meanwhile is kept for the next
    /// `poll`. The peer's requests are not answered while this blocks: two sides that call this
    /// at each other at once both time out.
    pub fn request_sync(&mut self, id: u64, data: &[u8], timeout: Duration) -> Result<Vec<u8>, Error> {
        self.send(Kind::Request, id, 0, data)?;
        let deadline = Instant::now() + timeout;
        let disconnects = self.peer.disconnects;
        let mut idle = IdleWait::default();
        loop {
            self.refresh_peer();
            if self.peer.disconnects != disconnects {
                self.cancel(id);
                return Err(Error::PeerGone);
            }
            let before = self.rx.read_index();
            match self.drain_to_pending(Some(id)).map_err(|e| self.broken(e))? {
                Some((Kind::Response, v)) => return Ok(v),
                Some((_, v)) => return Err(Error::Remote(String::from_utf8_lossy(&v).into_owned())),
                None => {}
            }
            self.flush()?;
            let now = Instant::now();
            if now >= deadline {
                // The peer may have it: tell it that nobody waits any more.
                self.withdraw(id)?;
                return Err(Error::Timeout(timeout.as_millis().min(u32::MAX as u128) as u32));
            }
            if self.rx.read_index() != before {
                idle.reset();
                continue;
            }
            idle.wait(deadline.saturating_duration_since(now));
        }
    }
}
