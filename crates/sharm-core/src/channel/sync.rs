//! The blocking request: send a request and wait on the calling (driving) thread for its answer.
//!
//! While it waits, this thread drains the incoming ring itself (the wake-up thread is not
//! involved); whatever else arrives is kept for the next poll, in order. It gives up when the
//! peer leaves without answering (the request is cancelled if it has not gone out) or when the
//! timeout passes (the request is cancelled, or the peer is told with a cancel record).
//! How it waits between looks is the wake-up policy's ([`super::wake::IdleWait`]).

use std::time::{Duration, Instant};

use super::deliver::Stop;
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
        let departures = self.peer.departures;
        let mut idle = IdleWait::default();
        loop {
            self.usable()?;
            self.look_at_peer()?;
            let gone = self.peer.departures != departures;
            let before = self.rx.read_index();
            // Read first: the answer of a peer that left may still be in the ring.
            match self.drain_to_pending(Some(id)).map_err(|e| self.broken(e))? {
                Stop::Answer(Kind::Response, v) => return Ok(v),
                Stop::Answer(_, v) => return Err(Error::Remote(String::from_utf8_lossy(&v).into_owned())),
                Stop::Empty if gone => {
                    self.cancel(id);
                    return Err(Error::PeerGone);
                }
                _ => {}
            }
            self.make_room_while_blocked();
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

    /// What a blocking request keeps is not released until it is delivered after the request;
    /// when that holds more than half the ring, it is released now (counted as in doubt by the
    /// peer should this process die before delivering it), so the answer can still come in.
    fn make_room_while_blocked(&mut self) {
        let held = self.rx.read_index().wrapping_sub(self.rx.released_index());
        if held > self.rx.capacity() as u64 / 2 {
            self.rx.hand_out_to(self.hold_from.unwrap_or(self.rx.read_index()));
            self.delivered();
        }
    }
}
