//! Sending: the send queue, single and batched sends, and flushing the queue into the ring.
//!
//! A message goes straight into the outgoing ring when nothing waits in the queue and a peer is
//! attached; what does not fit (the rest of a chunked message, or whole messages) waits in the
//! [`SendQueue`], in order, and goes out as the ring frees up ([`Channel::flush`], called by every
//! poll). The queue's limit (`max_queue_bytes`) counts payload bytes not yet in the ring; only
//! [`Channel::send`] applies it (a batch was accepted by the caller as a whole).
//!
//! A batch ([`Channel::send_batch`]) is staged by the caller in the ring's own record format
//! (see [`crate::record::Records`]), with no flags set. Records that need no chunking are copied
//! to the ring in runs, as they are; when they cannot go out now they wait as one
//! [`Outgoing::Block`].
//!
//! Nothing goes into the ring while no peer is attached (but our HELLO): it waits in the queue
//! for the next one. When a peer leaves, what waits in the queue was meant for it: messages and
//! requests are handed back in its departure (see `departure`), answers and stream frames are
//! dropped.

use std::collections::VecDeque;

use super::{Channel, SendOutcome};
use crate::error::{Error, ProtocolError};
use crate::framing::chunk_plan;
use crate::record::{Encoded, Kind, RecordHeader, Records, FLAG_MORE, HEADER_LEN};
use crate::ring::Producer;

/// Bytes of the header of each message in [`Channel::send_batch`]'s input: a ring record header.
pub const STAGED_HEADER: usize = HEADER_LEN;

/// One item of the send queue.
enum Outgoing {
    /// One message (or the HELLO), chunked as needed; `sent` payload bytes are in the ring.
    Message {
        kind: Kind,
        id: u64,
        gen: u16,
        sent: usize,
        data: Vec<u8>,
    },
    /// Encoded records that go to the ring as they are (see [`plain`]); the first `sent` bytes
    /// are in the ring.
    Block { sent: usize, records: Vec<u8> },
}

impl Outgoing {
    /// Payload bytes not yet in the ring.
    fn unsent_payload(&self) -> usize {
        match self {
            Outgoing::Message { sent, data, .. } => data.len() - sent,
            Outgoing::Block { sent, records } => Records::from(records, *sent).map(|r| r.header.len as usize).sum(),
        }
    }

    /// May this go out only to an attached peer? (The HELLO goes out before one attaches.)
    fn needs_peer(&self) -> bool {
        !matches!(self, Outgoing::Message { kind: Kind::Hello, .. })
    }

    /// Payload length of the next record this item writes.
    fn next_record_len(&self) -> usize {
        match self {
            Outgoing::Message { sent, data, .. } => data.len().saturating_sub(*sent),
            Outgoing::Block { sent, records } => Encoded::read(records, *sent).map_or(0, |r| r.header.len as usize),
        }
    }

    /// The buffer it holds, once it went out.
    fn into_buffer(self) -> Vec<u8> {
        match self {
            Outgoing::Message { data, .. } => data,
            Outgoing::Block { records, .. } => records,
        }
    }
}

/// Buffers of items that went out are kept for the next ones to wait (writing a fresh buffer
/// faults in each of its pages; a large message sent while the ring is full would pay that each
/// time): buffers of at least [`SPARE_MIN`] bytes. While messages keep coming, a buffer is kept
/// if it, the other spare buffers and the payload bytes waiting in the queue stay within the
/// queue's limit (or [`SPARE_BYTES`] if that is larger); once a flush finds the queue empty with
/// nothing queued since the previous such flush (the sender paused), the spare buffers are cut
/// back to [`SPARE_BYTES`].
const SPARE_MIN: usize = 64 << 10;
pub(super) const SPARE_BYTES: usize = 4 << 20;

/// Messages accepted but not yet (wholly) in the ring, in order, with their payload bytes.
#[derive(Default)]
pub(super) struct SendQueue {
    items: VecDeque<Outgoing>,
    /// Payload bytes of `items` not yet in the ring.
    bytes: usize,
    /// Buffers of items that went out, for the next ones (see [`SPARE_BYTES`]).
    pub(super) spare: Vec<Vec<u8>>,
    /// Something was queued since the last flush that found the queue empty.
    pushed: bool,
}

impl SendQueue {
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Queues a message of which the first `sent` payload bytes are already in the ring.
    pub(super) fn push_message(&mut self, kind: Kind, id: u64, gen: u16, data: &[u8], sent: usize) {
        let item = Outgoing::Message {
            kind,
            id,
            gen,
            sent,
            data: self.copy(data),
        };
        self.push(item);
    }

    /// Queues plain records (see [`plain`]) as one block.
    fn push_block(&mut self, records: &[u8]) {
        let records = self.copy(records);
        self.push(Outgoing::Block { sent: 0, records });
    }

    /// A copy of `bytes`, in a spare buffer if one is large enough.
    fn copy(&mut self, bytes: &[u8]) -> Vec<u8> {
        if bytes.len() >= SPARE_MIN {
            if let Some(i) = self.spare.iter().position(|b| b.capacity() >= bytes.len()) {
                let mut b = self.spare.swap_remove(i);
                b.clear();
                b.extend_from_slice(bytes);
                return b;
            }
        }
        bytes.to_vec()
    }

    /// Keeps the buffer of an item that went out, if it is worth it and it, the other spare
    /// buffers and the payload bytes waiting in the queue stay within `limit` (see [`SPARE_BYTES`]).
    fn recycle(&mut self, item: Outgoing, limit: usize) {
        let b = item.into_buffer();
        if b.capacity() >= SPARE_MIN && self.spare_bytes() + self.bytes + b.capacity() <= limit.max(SPARE_BYTES) {
            self.spare.push(b);
        }
    }

    /// Bytes held in spare buffers.
    pub(super) fn spare_bytes(&self) -> usize {
        self.spare.iter().map(Vec::capacity).sum()
    }

    /// The queue is empty: if nothing was queued since it last was, the sender paused, and the
    /// spare buffers are cut back to [`SPARE_BYTES`].
    fn emptied(&mut self) {
        if !self.pushed {
            let mut held = self.spare_bytes();
            while held > SPARE_BYTES {
                held -= self.spare.pop().map_or(0, |b| b.capacity());
            }
        }
        self.pushed = false;
    }

    fn push(&mut self, item: Outgoing) {
        self.bytes += item.unsent_payload();
        self.items.push_back(item);
        self.pushed = true;
    }

    /// Removes request `id` if none of it is in the ring yet. Returns whether it did.
    fn cancel(&mut self, id: u64) -> bool {
        for i in 0..self.items.len() {
            match &mut self.items[i] {
                Outgoing::Message {
                    kind: Kind::Request,
                    id: this,
                    sent: 0,
                    data,
                    ..
                } if *this == id => {
                    self.bytes -= data.len();
                    self.items.remove(i);
                    return true;
                }
                Outgoing::Block { sent, records } => {
                    let found =
                        Records::from(records, *sent).find(|r| r.header.kind == Kind::Request && r.header.id == id);
                    if let Some(r) = found {
                        let (at, end, len) = (r.at, r.end(), r.header.len as usize);
                        records.drain(at..end);
                        self.bytes -= len;
                        return true;
                    }
                }
                Outgoing::Message { .. } => {}
            }
        }
        false
    }

    /// The peer left: hands back the messages (into `messages`) and the ids of the requests
    /// (into `requests`) that were waiting here, in order, and drops answers and stream frames
    /// (they were for that peer). Our HELLO stays: it is the first record of our ring for
    /// whoever comes next.
    pub(super) fn take_for_departure(&mut self, messages: &mut Vec<Vec<u8>>, requests: &mut Vec<u64>) {
        self.items.retain_mut(|o| match o {
            Outgoing::Block { sent, records } => {
                for r in Records::from(records, *sent) {
                    match r.header.kind {
                        Kind::Message => messages.push(r.payload().to_vec()),
                        Kind::Request => requests.push(r.header.id),
                        _ => {}
                    }
                }
                false
            }
            Outgoing::Message {
                kind, id, data, sent, ..
            } => {
                match kind {
                    Kind::Message => messages.push(std::mem::take(data)),
                    Kind::Request => requests.push(*id),
                    Kind::Hello => {
                        *sent = 0;
                        return true;
                    }
                    _ => {}
                }
                false
            }
        });
        self.bytes = self.items.iter().map(Outgoing::unsent_payload).sum();
    }
}

impl Channel {
    /// Sends a message. `gen` is the generation to echo for answers (see
    /// [`super::Delivered::gen`]), 0 otherwise.
    pub fn send(&mut self, kind: Kind, id: u64, gen: u16, data: &[u8]) -> Result<SendOutcome, Error> {
        self.usable()?;
        // A peer replaced since the last poll must not get the rest of a message begun for its
        // predecessor (it would skip those chunks): look at its slot first.
        self.refresh_peer()?;
        let r = self.send_one(kind, id, gen, data, true)?;
        self.publish();
        if r == SendOutcome::Queued && self.peer.tx.is_some() {
            self.flush()?;
        }
        Ok(r)
    }

    /// Sends a batch of messages staged back to back in the ring's record format (see
    /// [`crate::record::Records`]): each a 16-byte header (payload length `u32`, kind `u8`,
    /// flags `u8` (must be 0), gen `u16`, id `u64`; little-endian) and the payload, padded to 8
    /// bytes. All are accepted whatever the queue holds (the caller applied the queue limit when
    /// it accepted them); the ring is published once, at the end.
    ///
    /// Records that need no chunking are already in ring format: while nothing waits in the
    /// queue they are copied to the ring in runs, and what does not fit is queued as one block.
    pub fn send_batch(&mut self, records: &[u8]) -> Result<(), Error> {
        self.usable()?;
        self.refresh_peer()?;
        for r in Records::from(records, 0) {
            if r.header.kind == Kind::Request {
                self.peer.note_request(r.header.id);
            }
        }
        let max = self.plain_max();
        let mut off = 0;
        let mut queued = false;
        let result = loop {
            if self.writes_directly() {
                match push_runs(&mut self.tx, &records[off..], max) {
                    Ok((n, _)) => off += n,
                    Err(e) => break Err(self.broken(e)),
                }
            }
            if off == records.len() {
                break Ok(());
            }
            let record = match staged(records, off) {
                Ok(r) => r,
                Err(e) => break Err(e),
            };
            let end = plain_run(records, off, max);
            if end > off && !self.writes_directly() {
                // Plain records behind others (or with no peer yet): one queued block.
                self.queue.push_block(&records[off..end]);
                queued = true;
                off = end;
                continue;
            }
            let h = record.header;
            match self.send_one(h.kind, h.id, h.gen, record.payload(), false) {
                Ok(outcome) => queued |= outcome == SendOutcome::Queued,
                Err(e) => break Err(e),
            }
            off = record.end();
        };
        self.publish();
        if queued && self.peer.tx.is_some() {
            self.flush()?;
        }
        result
    }

    /// Removes a request that has not started to go out from the queue. Returns whether it did.
    pub fn cancel(&mut self, id: u64) -> bool {
        self.queue.cancel(id)
    }

    /// Gives up on request `id`: removes it from the queue if none of it went out; otherwise
    /// tells the peer with a [`Kind::Cancel`] record, which the queue takes whatever it holds (a
    /// header of 16 bytes, one per request at most).
    pub fn withdraw(&mut self, id: u64) -> Result<(), Error> {
        if self.cancel(id) {
            return Ok(());
        }
        self.usable()?;
        self.refresh_peer()?;
        self.send_one(Kind::Cancel, id, 0, &[], false)?;
        self.publish();
        Ok(())
    }

    /// Does a message go straight to the ring (nothing waits before it, and a peer reads)?
    fn writes_directly(&self) -> bool {
        self.queue.is_empty() && self.peer.tx.is_some()
    }

    /// Largest payload of a record that goes to the ring as it is.
    fn plain_max(&self) -> usize {
        self.tx.max_record_payload().min(self.opts.max_message_bytes)
    }

    /// Writes one message into the ring, or what does not fit into the queue; publishes nothing.
    fn send_one(&mut self, kind: Kind, id: u64, gen: u16, data: &[u8], limit: bool) -> Result<SendOutcome, Error> {
        assert!(kind.is_sendable());
        if data.len() > self.opts.max_message_bytes {
            return Err(Error::TooLarge {
                len: data.len(),
                max: self.opts.max_message_bytes,
            });
        }
        if kind == Kind::Request {
            self.peer.note_request(id);
        }
        if self.writes_directly() {
            let mut sent = 0;
            let done = write_chunks(&mut self.tx, kind, id, gen, data, &mut sent).map_err(|e| self.broken(e))?;
            if done {
                return Ok(SendOutcome::Written);
            }
            self.queue.push_message(kind, id, gen, data, sent);
            return Ok(SendOutcome::Queued);
        }
        let queued = self.queue.bytes();
        if limit && queued > 0 && queued + data.len() > self.opts.max_queue_bytes {
            return Err(Error::QueueFull {
                queued,
                limit: self.opts.max_queue_bytes,
            });
        }
        self.queue.push_message(kind, id, gen, data, 0);
        Ok(SendOutcome::Queued)
    }

    /// Makes what was written visible to the peer, ringing it if it sleeps.
    pub(super) fn publish(&mut self) {
        if self.tx.has_unpublished() && self.tx.publish() {
            self.ring_peer();
            self.woke_peer = true;
        }
    }

    /// Moves queued messages into the ring while it has room.
    pub(super) fn flush(&mut self) -> Result<(), Error> {
        let max = self.plain_max();
        loop {
            while let Some(mut item) = self.queue.items.pop_front() {
                if item.needs_peer() && self.peer.tx.is_none() {
                    self.queue.items.push_front(item);
                    break;
                }
                let (written, r) = write_item(&mut self.tx, &mut item, max);
                self.queue.bytes -= written;
                match r {
                    Ok(true) => self.queue.recycle(item, self.opts.max_queue_bytes),
                    Ok(false) => {
                        self.queue.items.push_front(item);
                        break;
                    }
                    Err(e) => {
                        self.queue.items.push_front(item);
                        return Err(self.broken(e));
                    }
                }
            }
            self.publish();
            let waiting = self.peer.tx.is_some() && !self.queue.is_empty();
            self.note_waiting_for_space(waiting);
            if !waiting {
                if self.queue.is_empty() {
                    self.queue.emptied();
                }
                return Ok(());
            }
            // The reader was asked to ring us when it frees space: look once more, it may have
            // freed space before it could see the flag.
            let head = self.queue.items.front().expect("a waiting queue is not empty");
            let next_len = head.next_record_len().min(self.tx.max_record_payload()) + 8;
            if !self.tx.fits(next_len).map_err(|e| self.broken(e))? {
                return Ok(());
            }
        }
    }
}

/// Writes as much of `item` into the ring as fits, without publishing. Returns the payload bytes
/// written and whether the item is now wholly in the ring.
fn write_item(tx: &mut Producer, item: &mut Outgoing, max_plain: usize) -> (usize, Result<bool, ProtocolError>) {
    match item {
        Outgoing::Block { sent, records } => match push_runs(tx, &records[*sent..], max_plain) {
            Ok((n, payload)) => {
                *sent += n;
                (payload, Ok(*sent >= records.len()))
            }
            Err(e) => (0, Err(e)),
        },
        Outgoing::Message {
            kind,
            id,
            gen,
            sent,
            data,
        } => {
            let before = *sent;
            let r = write_chunks(tx, *kind, *id, *gen, data, sent);
            (*sent - before, r)
        }
    }
}

/// Writes as many records of a message as fit. Returns `true` when the message is complete.
fn write_chunks(
    tx: &mut Producer,
    kind: Kind,
    id: u64,
    gen: u16,
    data: &[u8],
    sent: &mut usize,
) -> Result<bool, ProtocolError> {
    let max = tx.max_record_payload();
    loop {
        let (flags, prefix, range) = chunk_plan(data.len(), *sent, max);
        let hdr = RecordHeader {
            len: 0,
            kind,
            flags,
            gen,
            id,
        };
        let prefix_bytes: &[u8] = match &prefix {
            Some(p) => p,
            None => &[],
        };
        if !tx.try_push(hdr, prefix_bytes, &data[range.clone()])? {
            return Ok(false);
        }
        *sent = range.end;
        if flags & FLAG_MORE == 0 {
            return Ok(true);
        }
    }
}

/// The staged record at `off`, checked: a sendable kind, no flags, its payload inside `records`.
fn staged(records: &[u8], off: usize) -> Result<Encoded<'_>, Error> {
    let left = records.len() - off;
    let header = RecordHeader::decode(&records[off..]).map_err(|e| {
        bad_batch(match e {
            ProtocolError::BadKind(k) => format!("kind {k} at offset {off}"),
            ProtocolError::BadFlags(f) => format!("flags {f} at offset {off}"),
            _ => format!("{left} bytes left at offset {off}, less than a header"),
        })
    })?;
    if !header.kind.is_sendable() {
        return Err(bad_batch(format!("kind {} at offset {off}", header.kind as u8)));
    }
    if header.flags != 0 {
        return Err(bad_batch(format!("flags {} at offset {off}", header.flags)));
    }
    Encoded::read(records, off)
        .ok_or_else(|| bad_batch(format!("length {} at offset {off} runs past the end", header.len)))
}

/// The record at `at` if it can go to the ring as it is: a sendable kind, no flags, a payload
/// of at most `max` bytes, wholly inside `records` (padding included).
#[inline]
fn plain(records: &[u8], at: usize, max: usize) -> Option<Encoded<'_>> {
    Encoded::read(records, at).filter(|r| {
        let h = &r.header;
        h.kind.is_sendable() && h.flags == 0 && h.len as usize <= max && r.is_whole()
    })
}

/// End of the run of plain records starting at `off`.
fn plain_run(records: &[u8], mut off: usize, max: usize) -> usize {
    while let Some(r) = plain(records, off, max) {
        off = r.end();
    }
    off
}

/// Copies runs of plain records from the start of `records` into the ring as they are, padding
/// at its end as needed; stops at the first record that is not plain or does not fit. Returns
/// the bytes consumed and the payload bytes among them.
fn push_runs(tx: &mut Producer, records: &[u8], max: usize) -> Result<(usize, usize), ProtocolError> {
    let mut off = 0;
    let mut payload = 0;
    loop {
        let (free, to_end) = tx.room()?;
        let room = free.min(to_end);
        let mut end = off;
        let mut next = None;
        while let Some(r) = plain(records, end, max) {
            let size = r.bytes.len();
            if end - off + size > room {
                next = Some(size);
                break;
            }
            payload += r.header.len as usize;
            end += size;
        }
        tx.push_encoded(&records[off..end]);
        off = end;
        let Some(size) = next else { return Ok((off, payload)) };
        // A plain record that did not fit: if it would cross the end of the data area and there
        // is room for padding plus the record, pad and go on from offset 0.
        let (free, to_end) = tx.room()?;
        if size <= to_end || to_end + size > free || !tx.pad_to_end()? {
            return Ok((off, payload));
        }
    }
}

fn bad_batch(what: String) -> Error {
    Error::Invalid(format!("send_batch: bad input: {what}"))
}
