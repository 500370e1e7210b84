//! Delivery accounting at a peer's departure: what of ours the departed peer did not get.
//!
//! The reader releases a record only once the layer above has delivered it, and publishes the
//! end of what it took out for delivery (`handed`, see [`crate::ring`]). So when the peer leaves,
//! every message we accepted for it is in exactly one of these places:
//! - released by the reader: delivered;
//! - in the ring before the reader's `handed` index: taken out by a process that is gone while it
//!   was delivering them; they may or may not have reached a listener: *in doubt*;
//! - in the ring after `handed`, or still in our send queue: never delivered: *undelivered*.
//!
//! Both lists are handed back in the order sent, with their bytes (our own records, read back).
//! A message larger than half the ring may have been released in part before the reader stopped
//! (it must release to make room for the rest); such a message was not delivered, but its bytes
//! are gone: it is only counted (`partial`). Requests are sorted the same way by id, so the
//! layer above can say of each request that fails with the peer whether it never reached the
//! peer, may have, or did.

use super::peer::TxPeer;
use super::Channel;
use crate::framing::{Reassembler, Step};
use crate::record::{Kind, FLAG_MORE};

/// What a departed peer did not get, in the order sent.
#[derive(Debug, Default)]
pub struct Departure {
    /// The peer's generation.
    pub generation: u32,
    /// Messages it never took out of the ring, or that never left our queue.
    pub undelivered: Vec<Vec<u8>>,
    /// Messages its process had taken out for delivery when it stopped: maybe delivered.
    pub in_doubt: Vec<Vec<u8>>,
    /// Messages it had taken in part (too large to hold back whole) and never delivered; their
    /// bytes are no longer in the ring.
    pub partial: u64,
    /// Every request up to this id that still waits for an answer was meant for this peer.
    pub requests_through: u64,
    /// Requests that never reached it (in the ring after `handed`, or in our queue).
    pub requests_unsent: Vec<u64>,
    /// Requests its process had taken out for delivery when it stopped.
    pub requests_in_doubt: Vec<u64>,
}

impl Departure {
    /// Messages not confirmed as delivered: undelivered, in doubt and partial.
    pub fn unconfirmed(&self) -> u64 {
        (self.undelivered.len() + self.in_doubt.len()) as u64 + self.partial
    }

    /// Adds what `other` holds (for a report that covers several departures).
    pub fn absorb(&mut self, other: Departure) {
        if other.generation != 0 {
            self.generation = other.generation;
        }
        self.requests_through = self.requests_through.max(other.requests_through);
        self.undelivered.extend(other.undelivered);
        self.in_doubt.extend(other.in_doubt);
        self.partial += other.partial;
        self.requests_unsent.extend(other.requests_unsent);
        self.requests_in_doubt.extend(other.requests_in_doubt);
    }
}

impl Channel {
    /// Accounts for peer `t`, which left: reads back our records in the ring from where its
    /// records started, and empties the send queue (answers and stream frames in it were for
    /// that peer and are dropped; our HELLO stays).
    pub(super) fn account_departure(&mut self, t: TxPeer) -> Departure {
        let mut d = Departure {
            generation: t.gen,
            requests_through: self.peer.last_request,
            ..Default::default()
        };
        self.publish();
        self.read_back(t.from, true, &mut d);
        self.queue
            .take_for_departure(&mut d.undelivered, &mut d.requests_unsent);
        d
    }

    /// Sorts our records in the ring from `from` on into `d`. With `trust_handed`, records
    /// before the reader's `handed` index are in doubt and the rest undelivered; without it
    /// (the reader is alive and may still take them), all are in doubt.
    pub(super) fn read_back(&self, from: u64, trust_handed: bool, d: &mut Departure) {
        let mut asm = Reassembler::new(self.opts.max_message_bytes);
        for r in self.tx.backlog(from) {
            let h = r.header;
            if h.kind == Kind::Hello {
                continue;
            }
            let doubt = r.handed || !trust_handed;
            let whole = match asm.push(&h, r.payload) {
                Ok(Step::Whole(b)) => b.to_vec(),
                Ok(Step::Done(v)) => v,
                Ok(Step::Partial) => continue,
                Ok(Step::Skipped) => {
                    // The rest of a message whose start the reader released.
                    if h.kind == Kind::Message && h.flags & FLAG_MORE == 0 {
                        d.partial += 1;
                    }
                    continue;
                }
                // Our own records do not decode: the peer wrote over them. Nothing more is
                // certain past this point.
                Err(_) => break,
            };
            match h.kind {
                Kind::Message if doubt => d.in_doubt.push(whole),
                Kind::Message => d.undelivered.push(whole),
                Kind::Request if doubt => d.requests_in_doubt.push(h.id),
                Kind::Request => d.requests_unsent.push(h.id),
                _ => {}
            }
        }
    }
}
