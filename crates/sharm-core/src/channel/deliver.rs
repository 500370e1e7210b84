//! Delivery: draining the incoming ring into a [`Batch`] or into memory the caller owns
//! ([`ArenaSink`]), handing chunks to the reassembler, and the reader's half of the delivery
//! accounting (see `departure` for the writer's half).
//!
//! A poll hands out the peer events that are due (before its messages, see `peer`), then
//! messages. What a poll hands out stays in the ring, unreleased, until the layer above has
//! delivered it: the next poll (or [`Channel::delivered`]) releases it. The end of what was
//! handed out is published (`handed`), so that if this process dies while delivering, the writer
//! knows which of its messages were in doubt and which were never taken. A chunked message of
//! up to a quarter ring is held back (not handed out, not released) until it is whole.
//!
//! Limits: one drain stops after [`BATCH_BYTES`] bytes or half the ring consumed (delivered or
//! not), when the sink is full, or at a change of the peer whose events must come first; a
//! record that would complete a message stays in the ring until the sink has room. Answers meant
//! for an earlier incarnation of this side (their `gen` is not ours) are dropped.

use std::collections::VecDeque;

use std::sync::atomic::Ordering::SeqCst;

use super::{Channel, PeerEvent};
use crate::error::{Error, ProtocolError};
use crate::framing::Step;
use crate::record::{Kind, FLAG_FIRST, FLAG_MORE};

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
    /// Ring index just past its last record (for a batch kept by a blocking request).
    end: u64,
}

/// What one poll delivers.
#[derive(Debug, Default)]
pub struct Batch {
    pub data: Vec<u8>,
    pub messages: Vec<Delivered>,
    /// Changes of the peer, in order; they come before `messages`.
    pub events: Vec<PeerEvent>,
    /// More is waiting: poll again.
    pub more: bool,
    /// In a batch kept by a blocking request: before message `.0`, the records of peer
    /// generation `.1` begin (its events are due there).
    boundaries: Vec<(usize, u32)>,
}

/// Why a drain stopped.
pub(super) enum Stop {
    /// Nothing more in the ring (or it is not open yet).
    Empty,
    /// The sink is full or the batch limits were reached.
    Full,
    /// A change of the peer: its events are due before what follows.
    Boundary,
    /// The answer a blocking request waits for.
    Answer(Kind, Vec<u8>),
}

/// Where [`Channel`]'s drain puts whole messages.
pub(super) trait Sink {
    /// Messages in it.
    fn count(&self) -> usize;
    /// The message just put ends at ring index `end`.
    fn note_end(&mut self, _end: u64) {}
    /// The records of peer generation `gen` begin here.
    fn boundary(&mut self, _gen: u32) {}
    /// Can it take one more message of up to `len` bytes (a record's payload length)?
    fn has_room(&self, len: usize) -> bool;
    fn put_inline(&mut self, kind: Kind, id: u64, gen: u16, bytes: &[u8]);
    fn put_owned(&mut self, kind: Kind, id: u64, gen: u16, v: Vec<u8>);
}

impl Sink for Batch {
    fn count(&self) -> usize {
        self.messages.len()
    }
    fn note_end(&mut self, end: u64) {
        if let Some(m) = self.messages.last_mut() {
            m.end = end;
        }
    }
    fn boundary(&mut self, gen: u32) {
        self.boundaries.push((self.messages.len(), gen));
    }
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
        self.messages.push(Delivered {
            kind,
            id,
            gen,
            payload,
            end: 0,
        });
    }
    fn put_owned(&mut self, kind: Kind, id: u64, gen: u16, v: Vec<u8>) {
        self.messages.push(Delivered {
            kind,
            id,
            gen,
            payload: Payload::Owned(v),
            end: 0,
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
    fn count(&self) -> usize {
        self.count
    }
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
#[derive(Debug, Default)]
pub struct PollInfo {
    /// Changes of the peer, in order; they come before the messages.
    pub events: Vec<PeerEvent>,
    /// More is waiting: poll again.
    pub more: bool,
}

impl Channel {
    /// Reads records into `sink` until it is full, the batch limits are reached, or a change of
    /// the peer must be handed out first. With `want` (a blocking request), does not stop at
    /// changes of the peer (it marks them in the sink) and stops at the answer to request `want`,
    /// which it returns instead of passing it on.
    pub(super) fn drain(&mut self, want: Option<u64>, sink: &mut dyn Sink) -> Result<Stop, ProtocolError> {
        if !self.rx_open {
            return Ok(Stop::Empty);
        }
        let cap = self.rx.capacity() as u64;
        let limit = (BATCH_BYTES as u64).min(cap / 2);
        let started_at = self.rx.read_index();
        // Limits count bytes consumed: records that deliver nothing (stale answers, chunks) must
        // not keep this loop, and the JS thread, busy forever.
        while self.rx.read_index().wrapping_sub(started_at) < limit {
            let Some(p) = self.rx.peek()? else {
                return Ok(Stop::Empty);
            };
            let h = p.header;
            if h.kind == Kind::Hello {
                self.rx.consume(&p);
                let gen = h.id as u32;
                if gen == self.rx_gen {
                    continue;
                }
                // A new producer: what follows is its. Its predecessor's events are due first.
                self.asm.reset();
                self.hold_from = None;
                self.rx_gen = gen;
                if want.is_some() {
                    sink.boundary(gen);
                    continue;
                }
                self.refresh_peer()?;
                return Ok(Stop::Boundary);
            }
            if want.is_none() && self.rx_gen != self.peer.last_joined {
                // A record of a peer not announced yet: a look at its slot may announce it.
                self.refresh_peer()?;
                if self.events_ready() {
                    return Ok(Stop::Boundary);
                }
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
                return Ok(Stop::Full);
            }
            let at = self.rx.read_index();
            let payload = self.rx.payload(&p);
            let mut answer = None;
            let mut put = false;
            match self.asm.push(&h, payload)? {
                Step::Whole(bytes) if !stale => {
                    if wanted {
                        answer = Some((h.kind, bytes.to_vec()));
                    } else {
                        sink.put_inline(h.kind, h.id, gen, bytes);
                        put = true;
                    }
                }
                Step::Done(v) if !stale => {
                    if wanted {
                        answer = Some((h.kind, v));
                    } else {
                        sink.put_owned(h.kind, h.id, gen, v);
                        put = true;
                    }
                }
                Step::Partial if h.flags & FLAG_FIRST != 0 => {
                    // Hold a message that fits in a quarter ring back until it is whole.
                    let total = u64::from_le_bytes(payload[..8].try_into().expect("a first chunk has its length"));
                    self.hold_from = (total <= cap / 4).then_some(at);
                }
                _ => {}
            }
            self.rx.consume(&p);
            if completes {
                self.hold_from = None;
            }
            if put {
                sink.note_end(self.rx.read_index());
            }
            if let Some((kind, v)) = answer {
                return Ok(Stop::Answer(kind, v));
            }
        }
        Ok(Stop::Full)
    }

    /// Drains into the batch kept for the next poll (see [`Channel::drain`]).
    pub(super) fn drain_to_pending(&mut self, want: Option<u64>) -> Result<Stop, ProtocolError> {
        let mut pending = std::mem::take(&mut self.pending);
        let r = self.drain(want, &mut pending);
        self.pending = pending;
        r
    }

    /// Releases what was handed out: the layer above has delivered it. Every poll does this
    /// first (a poll is only called once the previous batch was delivered); call it after the
    /// last poll of a round so the peer gets the space (and its accounting) at once.
    pub fn delivered(&mut self) {
        if !self.rx_open {
            return;
        }
        let handed = self.rx.handed_index();
        if handed != self.rx.released_index() && self.rx.release_to(handed) {
            self.ring_peer();
        }
    }

    /// Takes what arrived: peer events, then messages. Also moves queued messages into the ring.
    /// Call it whenever the waker's `notify` fires (and whenever else you like).
    pub fn poll(&mut self) -> Result<Batch, Error> {
        self.polling(|ch| {
            let mut b = Batch::default();
            let info = ch.poll_with(&mut b)?;
            b.events = info.events;
            b.more = info.more;
            Ok(b)
        })
    }

    /// Like [`Channel::poll`], but delivers into `sink` (see [`ArenaSink`]) until it is full.
    pub fn poll_into(&mut self, sink: &mut ArenaSink) -> Result<PollInfo, Error> {
        self.polling(|ch| ch.poll_with(sink))
    }

    fn poll_with(&mut self, sink: &mut dyn Sink) -> Result<PollInfo, Error> {
        self.usable()?;
        self.delivered();
        self.look_at_peer()?;
        let mut events = Vec::new();
        loop {
            // What arrived during a blocking request comes first.
            if !self.pending.messages.is_empty() && !self.take_pending(sink, &mut events) {
                break;
            }
            if sink.count() == 0 {
                self.take_events(None, &mut events);
            } else if self.events_ready() {
                break;
            }
            match self.drain(None, sink).map_err(|e| self.broken(e))? {
                Stop::Boundary if sink.count() == 0 => continue,
                _ => break,
            }
        }
        if self.rx_open {
            if self.pending.messages.is_empty() {
                self.rx.hand_out_to(self.hold_from.unwrap_or(self.rx.read_index()));
                if sink.count() == 0 {
                    // Nothing was handed out to wait for delivery (chunks, stale answers): free
                    // the space now, the writer may be waiting for it.
                    self.delivered();
                }
            }
            self.shared.rx_cursor.store(self.rx.read_index(), SeqCst);
        }
        self.flush()?;
        let more = !self.pending.messages.is_empty() || self.rx_open && self.rx.has_data() || self.events_ready();
        Ok(PollInfo { events, more })
    }

    /// Moves messages kept by a blocking request into `sink`, handing out the peer events due
    /// between them. Returns whether none is left.
    fn take_pending(&mut self, sink: &mut dyn Sink, events: &mut Vec<PeerEvent>) -> bool {
        let mut pending = std::mem::take(&mut self.pending);
        let mut taken = 0;
        let mut last_end = None;
        for (i, m) in pending.messages.iter_mut().enumerate() {
            while let Some(&(at, gen)) = pending.boundaries.first() {
                if at > i {
                    break;
                }
                if sink.count() > 0 {
                    break;
                }
                self.take_events(Some(gen), events);
                pending.boundaries.remove(0);
            }
            if pending.boundaries.first().is_some_and(|&(at, _)| at <= i) {
                break;
            }
            let len = match &m.payload {
                Payload::Inline { len, .. } => *len,
                Payload::Owned(_) => usize::MAX,
            };
            if !sink.has_room(len) {
                break;
            }
            match std::mem::replace(&mut m.payload, Payload::Owned(Vec::new())) {
                Payload::Inline { offset, len } => {
                    sink.put_inline(m.kind, m.id, m.gen, &pending.data[offset..offset + len])
                }
                Payload::Owned(v) => sink.put_owned(m.kind, m.id, m.gen, v),
            }
            last_end = Some(m.end);
            taken += 1;
        }
        pending.messages.drain(..taken);
        for b in pending.boundaries.iter_mut() {
            b.0 -= taken;
        }
        if let Some(end) = last_end {
            self.rx.hand_out_to(end);
        }
        let empty = pending.messages.is_empty();
        if empty {
            // Boundaries after the last message: the ring's own position decides from here.
            pending = Batch::default();
        }
        self.pending = pending;
        empty
    }
}
