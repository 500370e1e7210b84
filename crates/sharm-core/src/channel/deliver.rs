//! Delivery: draining the incoming ring into a [`Batch`] or into memory the caller owns
//! ([`ArenaSink`]), handing chunks to the reassembler, and the delivery accounting (which of our
//! records the peer has not confirmed as read).
//!
//! Limits: one drain stops after [`BATCH_BYTES`] bytes consumed (delivered or not) or when the
//! sink is full; a record that would complete a message stays in the ring until the sink has
//! room. Answers meant for an earlier incarnation of this side (their `gen` is not ours) are
//! dropped. The consumer index is released every quarter ring and at the end of a drain, and
//! the peer is rung when it waits for that space.

use std::collections::VecDeque;

use super::{Channel, PeerEvents};
use crate::error::{Error, ProtocolError};
use crate::framing::Step;
use crate::record::{Kind, FLAG_CONT, FLAG_MORE};

/// Limits of one `poll` batch.
const BATCH_BYTES: usize = 4 << 20;
const BATCH_MESSAGES: usize = 65_536;

/// Where a delivered message's bytes are.
#[derive(Debug)]
pub enum Payload {
    /// `len` bytes at `offset` in [`Batch::data`].
    Inline { offset: usize, len: usize },
    /// A reassembled message of its own.
    Owned(Vec<u8>),
}

/// One delivered message.
#[derive(Debug)]
pub struct Delivered {
    pub kind: Kind,
    pub id: u64,
    /// For requests: the low 16 bits of the sender's generation, to be echoed in the answer
    /// (the same for cancels).
    pub gen: u16,
    pub payload: Payload,
}

/// What one poll delivers.
#[derive(Debug, Default)]
pub struct Batch {
    pub data: Vec<u8>,
    pub messages: Vec<Delivered>,
    pub events: PeerEvents,
    /// More is waiting in the ring (the batch hit its limits).
    pub more: bool,
}

/// Where [`Channel`]'s drain puts whole messages.
pub(super) trait Sink {
    /// Can it take one more message of up to `len` bytes (a record's payload length)?
    fn has_room(&self, len: usize) -> bool;
    fn put_inline(&mut self, kind: Kind, id: u64, gen: u16, bytes: &[u8]);
    fn put_owned(&mut self, kind: Kind, id: u64, gen: u16, v: Vec<u8>);
}

impl Sink for Batch {
    fn has_room(&self, _len: usize) -> bool {
        self.data.len() < BATCH_BYTES && self.messages.len() < BATCH_MESSAGES
    }
    fn put_inline(&mut self, kind: Kind, id: u64, gen: u16, bytes: &[u8]) {
        let offset = self.data.len();
        self.data.extend_from_slice(bytes);
        let payload = Payload::Inline {
            offset,
            len: bytes.len(),
        };
        self.messages.push(Delivered { kind, id, gen, payload });
    }
    fn put_owned(&mut self, kind: Kind, id: u64, gen: u16, v: Vec<u8>) {
        self.messages.push(Delivered {
            kind,
            id,
            gen,
            payload: Payload::Owned(v),
        });
    }
}

/// Meta length of a message that does not lie in the arena (see [`ArenaSink`]).
pub const LARGE: u32 = u32::MAX;

/// Delivery into memory the caller owns, with no allocation for small messages: four `u32`
/// per message in `meta` (`kind | gen << 16`, id low 32 bits, id high 32 bits, length), payloads
/// back to back in `arena` from `used` on. A payload over `inline_max` bytes goes to `large`
/// instead, and its length reads [`LARGE`].
pub struct ArenaSink<'a> {
    pub meta: &'a mut [u32],
    pub arena: &'a mut [u8],
    pub used: usize,
    pub count: usize,
    pub inline_max: usize,
    pub large: &'a mut VecDeque<Vec<u8>>,
}

impl ArenaSink<'_> {
    fn entry(&mut self, kind: Kind, id: u64, gen: u16, len: u32) {
        let m = &mut self.meta[self.count * 4..self.count * 4 + 4];
        m[0] = kind as u32 | (gen as u32) << 16;
        m[1] = id as u32;
        m[2] = (id >> 32) as u32;
        m[3] = len;
        self.count += 1;
    }
}

impl Sink for ArenaSink<'_> {
    fn has_room(&self, len: usize) -> bool {
        (self.count + 1) * 4 <= self.meta.len() && (len > self.inline_max || self.used + len <= self.arena.len())
    }
    fn put_inline(&mut self, kind: Kind, id: u64, gen: u16, bytes: &[u8]) {
        if bytes.len() > self.inline_max {
            self.put_owned(kind, id, gen, bytes.to_vec());
            return;
        }
        self.arena[self.used..self.used + bytes.len()].copy_from_slice(bytes);
        self.used += bytes.len();
        self.entry(kind, id, gen, bytes.len() as u32);
    }
    fn put_owned(&mut self, kind: Kind, id: u64, gen: u16, v: Vec<u8>) {
        self.large.push_back(v);
        self.entry(kind, id, gen, LARGE);
    }
}

/// What [`Channel::poll_into`] says besides the messages.
#[derive(Debug, Default, Clone, Copy)]
pub struct PollInfo {
    pub events: PeerEvents,
    /// More is waiting: poll again.
    pub more: bool,
}

impl Channel {
    /// Reads records into `sink` until it is full or the batch limits are reached. With `want`,
    /// stops at the answer to request `want` and returns it instead of passing it on.
    pub(super) fn drain(
        &mut self,
        want: Option<u64>,
        sink: &mut dyn Sink,
    ) -> Result<Option<(Kind, Vec<u8>)>, ProtocolError> {
        let release_every = self.rx.capacity() as u64 / 4;
        let mut last_release = self.rx.read_index();
        let mut answer = None;
        let started_at = self.rx.read_index();
        // Limits count bytes delivered and bytes consumed: records that deliver nothing (stale
        // answers, chunks) must not keep this loop, and the JS thread, busy forever.
        while self.rx.read_index().wrapping_sub(started_at) < BATCH_BYTES as u64 {
            let Some(p) = self.rx.peek()? else { break };
            let h = p.header;
            if h.kind == Kind::Hello {
                self.asm.reset();
                self.rx_gen = h.id as u32;
                self.rx.consume(&p);
                continue;
            }
            let is_answer = h.kind.is_answer();
            let stale = is_answer && h.gen != self.my_gen as u16;
            let wanted = is_answer && want == Some(h.id);
            // Requests carry the sender's generation (echoed in answers), and so do cancels (the
            // request they name is the one of that generation); stream frames carry their type.
            let gen = match h.kind {
                Kind::Request | Kind::Cancel => self.rx_gen as u16,
                Kind::Stream => h.gen,
                _ => 0,
            };
            // A record that completes a message needs room in the sink; leave it in the ring
            // when there is none (chunks that only add to a reassembly need none).
            let completes = h.flags & FLAG_MORE == 0;
            if completes && !stale && !wanted && !sink.has_room(p.header.len as usize) {
                break;
            }
            let payload = self.rx.payload(&p);
            match self.asm.push(&h, payload)? {
                Step::Whole(bytes) if !stale => {
                    if wanted {
                        answer = Some((h.kind, bytes.to_vec()));
                    } else {
                        sink.put_inline(h.kind, h.id, gen, bytes);
                    }
                }
                Step::Done(v) if !stale => {
                    if wanted {
                        answer = Some((h.kind, v));
                    } else {
                        sink.put_owned(h.kind, h.id, gen, v);
                    }
                }
                _ => {}
            }
            self.rx.consume(&p);
            if self.rx.read_index().wrapping_sub(last_release) >= release_every {
                last_release = self.rx.read_index();
                if self.rx.release() {
                    self.shared.peer_bell.ring();
                }
            }
            if answer.is_some() {
                break;
            }
        }
        if self.rx.read_index() != last_release && self.rx.release() {
            self.shared.peer_bell.ring();
        }
        Ok(answer)
    }

    /// Drains into the batch kept for the next poll (see [`Channel::drain`]).
    pub(super) fn drain_to_pending(&mut self, want: Option<u64>) -> Result<Option<(Kind, Vec<u8>)>, ProtocolError> {
        let mut pending = std::mem::take(&mut self.pending);
        let r = self.drain(want, &mut pending);
        self.pending = pending;
        r
    }

    /// Takes what arrived: messages, peer events. Also moves queued messages into the ring.
    /// Call it whenever the waker's `notify` fires (and whenever else you like).
    pub fn poll(&mut self) -> Result<Batch, Error> {
        self.polling(Self::poll_inner)
    }

    fn poll_inner(&mut self) -> Result<Batch, Error> {
        self.usable()?;
        self.refresh_peer();
        self.drain_to_pending(None).map_err(|e| self.broken(e))?;
        self.flush()?;
        let mut b = std::mem::take(&mut self.pending);
        b.events = std::mem::take(&mut self.peer.events);
        b.more = self.rx.has_data();
        Ok(b)
    }

    /// Like [`Channel::poll`], but delivers into `sink` (see [`ArenaSink`]) until it is full.
    pub fn poll_into(&mut self, sink: &mut ArenaSink) -> Result<PollInfo, Error> {
        self.polling(|ch| ch.poll_into_inner(sink))
    }

    fn poll_into_inner(&mut self, sink: &mut ArenaSink) -> Result<PollInfo, Error> {
        self.usable()?;
        self.refresh_peer();
        // What arrived during a requestSync comes first.
        if !self.pending.messages.is_empty() {
            let mut taken = 0;
            for m in self.pending.messages.iter_mut() {
                let len = match &m.payload {
                    Payload::Inline { len, .. } => *len,
                    Payload::Owned(_) => usize::MAX,
                };
                if !sink.has_room(len) {
                    break;
                }
                match std::mem::replace(&mut m.payload, Payload::Owned(Vec::new())) {
                    Payload::Inline { offset, len } => {
                        sink.put_inline(m.kind, m.id, m.gen, &self.pending.data[offset..offset + len])
                    }
                    Payload::Owned(v) => sink.put_owned(m.kind, m.id, m.gen, v),
                }
                taken += 1;
            }
            self.pending.messages.drain(..taken);
            if self.pending.messages.is_empty() {
                self.pending.data = Vec::new();
            }
        }
        if self.pending.messages.is_empty() {
            self.drain(None, sink).map_err(|e| self.broken(e))?;
        }
        self.flush()?;
        Ok(PollInfo {
            events: std::mem::take(&mut self.peer.events),
            more: !self.pending.messages.is_empty() || self.rx.has_data(),
        })
    }

    /// Messages we wrote that the peer has not released: our own records, read back.
    pub(super) fn count_unconfirmed(&self) -> u64 {
        self.tx
            .unreleased()
            .filter(|h| h.kind == Kind::Message && h.flags & FLAG_CONT == 0)
            .count() as u64
    }
}
