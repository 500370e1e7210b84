//! A lock-free single-producer/single-consumer byte ring of variable-length records.
//!
//! Contract:
//! - Exactly one [`Producer`] writes a ring and exactly one [`Consumer`] reads it, usually in two
//!   processes. A [`RingMem`] (the raw view of one ring, made by the `unsafe` [`RingMem::new`]) is
//!   neither `Copy` nor `Clone`, and [`Producer::new`] and [`Consumer::new`] consume it; the caller
//!   of `RingMem::new` promises that no second `Producer` (or no second `Consumer`) of the same ring
//!   exists anywhere while this one lives (in a channel, the side claim in the segment header makes
//!   that so across processes). Both ends are `Send` but not `Sync`: one thread drives each.
//! - Who writes what: the producer stores `write` (its index) and the record bytes between
//!   `write` and `read + capacity`; the consumer stores `read` (its index). Each only loads the
//!   other's index. Indices grow without wrapping (u64); the position in the data area is
//!   `index & (capacity - 1)`.
//! - Who only looks: a [`RingWatch`] (from [`Producer::watch`] or [`Consumer::watch`]) reads both
//!   indices and sets the two sleep flags below; it never reads or writes records or indices.
//!   The wake-up thread holds one per ring. [`Producer::backlog`] lets the producer read back
//!   its own records that the consumer has not released, without storing anything.
//! - Full: [`Producer::try_push`] returns `false` and writes nothing. Empty: [`Consumer::peek`]
//!   returns `None`. Neither blocks and neither takes a lock.
//! - A record never straddles the end of the data area: when it would, the producer fills the rest
//!   with a pad record (or, when fewer than a header's bytes are left, with nothing; both sides
//!   skip such a tail).
//! - Headers are written and read only through the codec of [`crate::record`].
//! - The consumer trusts nothing it reads: the producer's index must be within `capacity` of its
//!   own, every header is decoded from a local copy and checked, and a record must lie inside what
//!   was published. Anything else is a [`ProtocolError`], never an out-of-bounds access.
//! - The producer checks the consumer's index the same way (a consumer cannot be ahead of it).
//!
//! - Delivery accounting: the consumer releases (stores `read`) only what the layer above has
//!   delivered, and publishes `handed`, the end of what it took out for delivery. So after the
//!   consumer's process dies, its producer knows of each record still in the ring whether it was
//!   never taken (`handed..write`) or was being delivered (`read..handed`), and can read it back
//!   ([`Producer::backlog`]).
//! - A new consumer does not guess where its records start: it waits until the producer
//!   welcomes it ([`Producer::welcome`]: its generation and an index, in the producer's line)
//!   and starts there ([`Consumer::open_at`]). Until then it stores nothing in the control block,
//!   so the producer can first account for its predecessor's backlog.
//!
//! Two flags support sleeping: `reader_asleep` (consumer line: "ring my doorbell when you write")
//! and `writer_waiting` (producer line: "ring my doorbell when you free space"). The sleeper sets
//! its flag (through a [`RingWatch`] or [`Producer::ask_for_space`]); the other end clears it with
//! a swap when it publishes or releases and then rings. The flag, its re-check and the index
//! stores are `SeqCst`, so a sleeper and a waker cannot both miss each other (the store-load
//! pattern of Dekker's algorithm).

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::error::ProtocolError;
use crate::record::{record_size, Kind, RecordHeader, ALIGN, HEADER_LEN};

/// Producer cache lines (128 bytes: adjacent-line prefetchers pull pairs of lines).
#[repr(C, align(128))]
pub struct ProducerLine {
    pub write: AtomicU64,
    pub writer_waiting: AtomicU32,
    _pad: u32,
    /// The last welcome (see [`Producer::welcome`]): the consumer's generation in the low 32
    /// bits, the producer's in the high 32 bits; 0 before any.
    pub welcome: AtomicU64,
    /// Where the records for the welcomed consumer start.
    pub welcome_at: AtomicU64,
}

/// Consumer cache lines.
#[repr(C, align(128))]
pub struct ConsumerLine {
    /// Released: everything before it was delivered (or skipped); its space is free.
    pub read: AtomicU64,
    pub reader_asleep: AtomicU32,
    _pad: u32,
    /// Handed out: everything before it was taken out of the ring for delivery. Between `read`
    /// and `handed` lie the records of the batch being delivered.
    pub handed: AtomicU64,
}

/// The control block at the start of each ring.
#[repr(C)]
pub struct RingControl {
    pub producer: ProducerLine,
    pub consumer: ConsumerLine,
}

const _: () = assert!(std::mem::size_of::<RingControl>() == crate::layout::RING_CONTROL_BYTES);

/// Raw view of one ring: its control block and data area. Becomes one [`Producer`] or one
/// [`Consumer`]; not `Copy`, so it cannot become both.
pub struct RingMem {
    ctl: *const RingControl,
    data: *mut u8,
    capacity: usize,
}

// SAFETY: a RingMem only points into shared memory that `new`'s caller keeps mapped; moving the
// pointers to another thread changes nothing about that. Its one shared accessor (`control`)
// hands out atomics.
unsafe impl Send for RingMem {}

impl RingMem {
    /// # Safety
    /// `base` must point to `RING_CONTROL_BYTES + capacity` bytes that stay mapped, 128-byte
    /// aligned, for as long as this value, the `Producer` or `Consumer` made from it, and every
    /// [`RingWatch`] taken from those live; `capacity` must be a power of two. The value made
    /// here must become the only `Producer` or the only `Consumer` of this ring while it lives
    /// (see the module contract): make at most one `RingMem` per ring and end in a process, and
    /// do not hand out an end of a ring that another process holds.
    pub unsafe fn new(base: *mut u8, capacity: usize) -> RingMem {
        debug_assert!(capacity.is_power_of_two());
        debug_assert_eq!(base as usize % 128, 0);
        RingMem {
            ctl: base as *const RingControl,
            // SAFETY: the caller guarantees the data area follows the control block.
            data: unsafe { base.add(crate::layout::RING_CONTROL_BYTES) },
            capacity,
        }
    }

    /// The control block (all atomics), e.g. to set up indices before an end is made.
    #[inline]
    pub fn control(&self) -> &RingControl {
        // SAFETY: `new`'s contract keeps the control block mapped; all its fields are atomics.
        unsafe { &*self.ctl }
    }

    /// Largest payload one record may carry in a ring of this capacity.
    #[inline]
    pub fn max_record_payload(&self) -> usize {
        max_record_payload(self.capacity)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn watch(&self) -> RingWatch {
        RingWatch { ctl: self.ctl }
    }

    /// The next record at index `read`, given that `avail` bytes (at most `capacity`) are
    /// published from there: either a tail to skip (a pad) or a checked record. Shared by the
    /// consumer and by the producer's read-only walk, so both check records the same way.
    #[inline(always)]
    fn locate(&self, read: u64, avail: u64) -> Result<Located, ProtocolError> {
        let cap = self.capacity;
        let pos = read as usize & (cap - 1);
        let to_end = cap - pos;
        if to_end < HEADER_LEN {
            // Implicit pad: too little room for a header before the end.
            if avail < to_end as u64 {
                return Err(ProtocolError::RecordOverrun {
                    need: to_end as u64,
                    available: avail,
                });
            }
            return Ok(Located::Skip(to_end));
        }
        if avail < HEADER_LEN as u64 {
            return Err(ProtocolError::RecordOverrun {
                need: HEADER_LEN as u64,
                available: avail,
            });
        }
        let mut raw = [0u8; HEADER_LEN];
        // SAFETY: `pos + HEADER_LEN <= capacity` (checked above) and the bytes were published
        // (avail >= HEADER_LEN). We copy them once and only use the copy.
        unsafe { std::ptr::copy_nonoverlapping(self.data.add(pos), raw.as_mut_ptr(), HEADER_LEN) };
        let header = RecordHeader::decode(&raw)?;
        if header.kind == Kind::Pad {
            if header.len as usize != to_end - HEADER_LEN || avail < to_end as u64 {
                return Err(ProtocolError::RecordOverrun {
                    need: to_end as u64,
                    available: avail.min(header.len as u64),
                });
            }
            header.validate(0)?;
            return Ok(Located::Skip(to_end));
        }
        header.validate(self.max_record_payload())?;
        let size = header.size();
        if size > to_end || size as u64 > avail {
            return Err(ProtocolError::RecordOverrun {
                need: size as u64,
                available: avail.min(to_end as u64),
            });
        }
        // SAFETY: pos + size <= capacity, checked just above.
        let payload = unsafe { self.data.add(pos + HEADER_LEN) };
        Ok(Located::Record(Peeked { header, payload, size }))
    }
}

/// What lies at a read index.
enum Located {
    /// Padding up to the end of the data area: skip this many bytes.
    Skip(usize),
    Record(Peeked),
}

/// A read-only view of a ring's control block, for a thread that only watches the ring (the
/// wake-up thread): it loads both indices and sets the sleep flags, and can do nothing else.
pub struct RingWatch {
    ctl: *const RingControl,
}

// SAFETY: a RingWatch only reaches atomics in the control block, which `RingMem::new`'s contract
// keeps mapped while any watch lives; atomics may be used from any thread.
unsafe impl Send for RingWatch {}
// SAFETY: as above: every access is an atomic operation.
unsafe impl Sync for RingWatch {}

impl RingWatch {
    #[inline]
    fn control(&self) -> &RingControl {
        // SAFETY: see `unsafe impl Send for RingWatch`: the control block stays mapped and holds
        // only atomics.
        unsafe { &*self.ctl }
    }

    /// The producer's published index.
    #[inline]
    pub fn producer_index(&self) -> u64 {
        self.control().producer.write.load(Ordering::SeqCst)
    }

    /// The producer's last welcome: (consumer generation, producer generation).
    #[inline]
    pub fn welcome(&self) -> (u32, u32) {
        let w = self.control().producer.welcome.load(Ordering::SeqCst);
        (w as u32, (w >> 32) as u32)
    }

    /// The consumer's published index.
    #[inline]
    pub fn consumer_index(&self) -> u64 {
        self.control().consumer.read.load(Ordering::SeqCst)
    }

    /// Says (or unsays) that the consumer's thread sleeps: the producer rings on its next publish.
    #[inline]
    pub fn set_reader_asleep(&self, asleep: bool) {
        self.control()
            .consumer
            .reader_asleep
            .store(asleep as u32, Ordering::SeqCst);
    }

    /// Says that the producer waits for space: the consumer rings on its next release.
    #[inline]
    pub fn set_writer_waiting(&self) {
        self.control().producer.writer_waiting.store(1, Ordering::SeqCst);
    }
}

/// Largest payload one record may carry: a quarter of the ring, so several records are in flight.
pub const fn max_record_payload(capacity: usize) -> usize {
    capacity / 4 - HEADER_LEN
}

/// The writing end of a ring.
pub struct Producer {
    mem: RingMem,
    write: u64,
    cached_read: u64,
    /// Records pushed since the last publish.
    dirty: bool,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

// SAFETY: the producer only touches shared memory through atomics and its own (unpublished)
// region of the data area; moving it to another thread is fine. It is not Sync (Cell marker).
unsafe impl Send for Producer {}

impl Producer {
    /// Takes over the producer end, continuing at the published write index. Clears the
    /// `writer_waiting` flag a predecessor may have left.
    pub fn new(mem: RingMem) -> Producer {
        mem.control().producer.writer_waiting.store(0, Ordering::SeqCst);
        let write = mem.control().producer.write.load(Ordering::Acquire);
        let cached_read = mem.control().consumer.read.load(Ordering::Acquire);
        Producer {
            mem,
            write,
            cached_read,
            dirty: false,
            _not_sync: PhantomData,
        }
    }

    /// Ring capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.mem.capacity
    }

    /// Largest payload one record may carry in this ring.
    #[inline]
    pub fn max_record_payload(&self) -> usize {
        self.mem.max_record_payload()
    }

    /// A watch on this ring's control block (for the wake-up thread).
    pub fn watch(&self) -> RingWatch {
        self.mem.watch()
    }

    /// Says that this producer waits for space: the consumer rings on its next release.
    pub fn ask_for_space(&self) {
        self.mem.watch().set_writer_waiting();
    }

    /// Tells the consumer of generation `consumer` that its records start at the current write
    /// index and come from producer generation `producer`. Publish first: what was written
    /// before is not for it.
    pub fn welcome(&mut self, consumer: u32, producer: u32) {
        let c = self.mem.control();
        c.producer.welcome_at.store(self.write, Ordering::SeqCst);
        c.producer
            .welcome
            .store(u64::from(consumer) | u64::from(producer) << 32, Ordering::SeqCst);
    }

    /// The records from index `from` (or from the consumer's `read` if that is later) to the
    /// write index, each with whether the consumer had taken it out for delivery (before its
    /// `handed` index). Reads our own records back, stores nothing; ends early at anything that
    /// does not check out.
    pub fn backlog(&self, from: u64) -> Backlog<'_> {
        let c = self.mem.control();
        let write = c.producer.write.load(Ordering::Acquire);
        let read = c.consumer.read.load(Ordering::Acquire);
        let handed = c.consumer.handed.load(Ordering::Acquire);
        // Indices grow without wrapping in practice; compare by distance from `write`.
        let behind = |i: u64| write.wrapping_sub(i);
        let start = if behind(read) <= behind(from) { read } else { from };
        let handed = if behind(handed) <= behind(start) { handed } else { start };
        Backlog {
            mem: &self.mem,
            read: start,
            write,
            handed,
        }
    }

    /// Bytes the consumer has not yet released, re-reading its index.
    fn used(&mut self) -> Result<u64, ProtocolError> {
        self.cached_read = self.mem.control().consumer.read.load(Ordering::Acquire);
        let used = self.write.wrapping_sub(self.cached_read);
        if used > self.mem.capacity as u64 {
            return Err(ProtocolError::BadIndex {
                distance: used,
                capacity: self.mem.capacity as u64,
            });
        }
        Ok(used)
    }

    /// Bytes needed to place a record of `len` payload bytes at the current position, padding included.
    fn needed(&self, len: usize) -> (usize, usize) {
        let cap = self.mem.capacity;
        let pos = (self.write as usize) & (cap - 1);
        let to_end = cap - pos;
        let rec = record_size(len);
        if rec <= to_end {
            (0, rec)
        } else {
            (to_end, rec)
        }
    }

    /// Can a record with `len` payload bytes be pushed now?
    pub fn fits(&mut self, len: usize) -> Result<bool, ProtocolError> {
        let (pad, rec) = self.needed(len);
        let cap = self.mem.capacity as u64;
        let need = (pad + rec) as u64;
        let used = self.write.wrapping_sub(self.cached_read);
        if used <= cap && used + need <= cap {
            return Ok(true);
        }
        Ok(self.used()? + need <= cap)
    }

    /// Writes one record whose payload is `prefix` followed by `body`, without publishing it.
    /// Returns `false` (and writes nothing) when it does not fit. Call [`Producer::publish`] after
    /// one or more pushes.
    ///
    /// `prefix.len() + body.len()` must not exceed [`RingMem::max_record_payload`].
    pub fn try_push(&mut self, mut hdr: RecordHeader, prefix: &[u8], body: &[u8]) -> Result<bool, ProtocolError> {
        let len = prefix.len() + body.len();
        assert!(
            len <= self.mem.max_record_payload(),
            "record payload over the ring's limit"
        );
        if !self.fits(len)? {
            return Ok(false);
        }
        let cap = self.mem.capacity;
        let (pad, rec) = self.needed(len);
        if pad > 0 {
            self.write_pad(pad);
        }
        let pos = self.write as usize & (cap - 1);
        hdr.len = len as u32;
        self.write_bytes(pos, &hdr.encode());
        self.write_bytes(pos + HEADER_LEN, prefix);
        self.write_bytes(pos + HEADER_LEN + prefix.len(), body);
        self.write = self.write.wrapping_add(rec as u64);
        self.dirty = true;
        Ok(true)
    }

    /// Free bytes (re-reading the consumer's index) and bytes from the current position to the
    /// end of the data area.
    pub fn room(&mut self) -> Result<(usize, usize), ProtocolError> {
        let cap = self.mem.capacity;
        let to_end = cap - (self.write as usize & (cap - 1));
        let free = cap - self.used()? as usize;
        Ok((free, to_end))
    }

    /// Fills the rest of the data area with a pad record (or bare padding when less than a header
    /// is left), so that the next record starts at offset 0. Returns `false` (and writes
    /// nothing) when that room is not free.
    pub fn pad_to_end(&mut self) -> Result<bool, ProtocolError> {
        let cap = self.mem.capacity;
        let pos = self.write as usize & (cap - 1);
        let to_end = cap - pos;
        if self.used()? as usize + to_end > cap {
            return Ok(false);
        }
        self.write_pad(to_end);
        Ok(true)
    }

    /// Copies `records`, complete records already encoded (headers checked by the caller, each
    /// starting at a multiple of [`ALIGN`]), to the current position in one go, without
    /// publishing. `records.len()` must be a multiple of [`ALIGN`] and at most both numbers of
    /// [`Producer::room`].
    pub fn push_encoded(&mut self, records: &[u8]) {
        let cap = self.mem.capacity;
        let pos = self.write as usize & (cap - 1);
        assert!(records.len().is_multiple_of(ALIGN) && pos + records.len() <= cap);
        assert!(self.write.wrapping_sub(self.cached_read) as usize + records.len() <= cap);
        self.write_bytes(pos, records);
        self.write = self.write.wrapping_add(records.len() as u64);
        self.dirty = self.dirty || !records.is_empty();
    }

    /// Skips the `pad` bytes up to the end of the data area: a pad record there, or bare padding
    /// when less than a header fits (the consumer skips a remainder that small by itself).
    fn write_pad(&mut self, pad: usize) {
        let pos = self.write as usize & (self.mem.capacity - 1);
        if pad >= HEADER_LEN {
            let p = RecordHeader {
                len: (pad - HEADER_LEN) as u32,
                kind: Kind::Pad,
                flags: 0,
                gen: 0,
                id: 0,
            };
            self.write_bytes(pos, &p.encode());
        }
        self.write = self.write.wrapping_add(pad as u64);
        self.dirty = true;
    }

    #[inline]
    fn write_bytes(&mut self, pos: usize, bytes: &[u8]) {
        debug_assert!(pos + bytes.len() <= self.mem.capacity);
        // SAFETY: `pos + len <= capacity` (a record never straddles the end, checked by `needed`),
        // and the region between `write` and `read + capacity` belongs to the producer until it
        // publishes; the consumer does not read it.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.mem.data.add(pos), bytes.len()) }
    }

    /// Makes everything pushed so far visible to the consumer. Returns `true` when the consumer
    /// said it is asleep (the caller must ring its doorbell); the flag is cleared.
    pub fn publish(&mut self) -> bool {
        let c = self.mem.control();
        self.dirty = false;
        c.producer.write.store(self.write, Ordering::SeqCst);
        c.consumer.reader_asleep.load(Ordering::SeqCst) != 0 && c.consumer.reader_asleep.swap(0, Ordering::SeqCst) != 0
    }

    /// Records pushed since the last publish? (A local flag: the shared index is never
    /// compared, so an idle producer does not store it again.)
    pub fn has_unpublished(&self) -> bool {
        self.dirty
    }

    /// Consumer's index as last loaded; changes when the consumer frees space.
    pub fn consumer_index(&self) -> u64 {
        self.mem.control().consumer.read.load(Ordering::Acquire)
    }

    pub fn write_index(&self) -> u64 {
        self.write
    }
}

/// See [`Producer::backlog`].
pub struct Backlog<'a> {
    mem: &'a RingMem,
    read: u64,
    write: u64,
    handed: u64,
}

/// One record of a [`Backlog`].
pub struct BacklogRecord<'a> {
    pub header: RecordHeader,
    pub payload: &'a [u8],
    /// The consumer had taken it out for delivery when it stopped (it may have been delivered).
    pub handed: bool,
}

impl<'a> Iterator for Backlog<'a> {
    type Item = BacklogRecord<'a>;

    fn next(&mut self) -> Option<BacklogRecord<'a>> {
        loop {
            let avail = self.write.wrapping_sub(self.read);
            if avail == 0 || avail > self.mem.capacity as u64 {
                return None;
            }
            match self.mem.locate(self.read, avail).ok()? {
                Located::Skip(n) => self.read = self.read.wrapping_add(n as u64),
                Located::Record(p) => {
                    let end = self.read.wrapping_add(p.size as u64);
                    self.read = end;
                    let handed = self.write.wrapping_sub(end) >= self.write.wrapping_sub(self.handed);
                    // SAFETY: `locate` checked that the payload lies inside the data area and
                    // inside what we published; these are our own records, which the consumer
                    // does not write, and nothing writes them while `self.mem` is borrowed.
                    let payload = unsafe { std::slice::from_raw_parts(p.payload, p.header.len as usize) };
                    return Some(BacklogRecord {
                        header: p.header,
                        payload,
                        handed,
                    });
                }
            }
        }
    }
}

/// A record the consumer is looking at: a copied header and where its payload lies.
#[derive(Clone, Copy, Debug)]
pub struct Peeked {
    pub header: RecordHeader,
    payload: *const u8,
    size: usize,
}

/// The reading end of a ring.
pub struct Consumer {
    mem: RingMem,
    read: u64,
    cached_write: u64,
    /// What was last stored as `handed`.
    handed: u64,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

// SAFETY: as for Producer.
unsafe impl Send for Consumer {}

impl Consumer {
    /// Takes over the consumer end. With `discard_backlog`, everything already published is
    /// skipped (a newly attached side does not read what was written for its predecessor).
    pub fn new(mem: RingMem, discard_backlog: bool) -> Consumer {
        let c = mem.control();
        let mut read = c.consumer.read.load(Ordering::Acquire);
        if discard_backlog {
            read = c.producer.write.load(Ordering::Acquire);
            c.consumer.read.store(read, Ordering::SeqCst);
        }
        c.consumer.reader_asleep.store(0, Ordering::SeqCst);
        let mut consumer = Consumer {
            mem,
            read,
            cached_write: read,
            handed: read,
            _not_sync: PhantomData,
        };
        if discard_backlog {
            consumer.hand_out();
        }
        consumer
    }

    /// Starts reading at `index`, where the producer's welcome said our records start: stores
    /// it as `read` and `handed` (what lay before it was accounted for by the producer). The
    /// index must be within `capacity` behind the producer's. Returns whether the producer waits
    /// for space (the caller must ring its doorbell).
    pub fn open_at(&mut self, index: u64) -> Result<bool, ProtocolError> {
        let c = self.mem.control();
        let write = c.producer.write.load(Ordering::SeqCst);
        let distance = write.wrapping_sub(index);
        if distance > self.mem.capacity as u64 {
            return Err(ProtocolError::BadIndex {
                distance,
                capacity: self.mem.capacity as u64,
            });
        }
        self.read = index;
        self.cached_write = index;
        self.handed = index;
        c.consumer.handed.store(index, Ordering::SeqCst);
        Ok(self.release_to(index))
    }

    /// Publishes `handed` = the read position: everything consumed so far was taken out for
    /// delivery.
    pub fn hand_out(&mut self) {
        self.hand_out_to(self.read);
    }

    /// Publishes `handed` = `index` (a position already consumed; it never moves back).
    pub fn hand_out_to(&mut self, index: u64) {
        if index != self.handed && self.read.wrapping_sub(index) < self.read.wrapping_sub(self.handed) {
            self.handed = index;
            self.mem.control().consumer.handed.store(index, Ordering::SeqCst);
        }
    }

    /// The end of what was handed out.
    pub fn handed_index(&self) -> u64 {
        self.handed
    }

    /// Ring capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.mem.capacity
    }

    /// A watch on this ring's control block (for the wake-up thread).
    pub fn watch(&self) -> RingWatch {
        self.mem.watch()
    }

    /// Published bytes not yet consumed.
    fn available(&mut self) -> Result<u64, ProtocolError> {
        if self.cached_write == self.read {
            self.cached_write = self.mem.control().producer.write.load(Ordering::Acquire);
        }
        let avail = self.cached_write.wrapping_sub(self.read);
        if avail > self.mem.capacity as u64 {
            return Err(ProtocolError::BadIndex {
                distance: avail,
                capacity: self.mem.capacity as u64,
            });
        }
        Ok(avail)
    }

    /// Is there anything to read (a fresh look at the producer's index)?
    pub fn has_data(&self) -> bool {
        self.mem.control().producer.write.load(Ordering::SeqCst) != self.read
    }

    /// The next record, if any. Skips pads. Call [`Consumer::consume`] when done with it.
    #[inline]
    pub fn peek(&mut self) -> Result<Option<Peeked>, ProtocolError> {
        loop {
            let avail = self.available()?;
            if avail == 0 {
                return Ok(None);
            }
            match self.mem.locate(self.read, avail)? {
                Located::Skip(n) => self.read = self.read.wrapping_add(n as u64),
                Located::Record(p) => return Ok(Some(p)),
            }
        }
    }

    /// The payload of a peeked record.
    ///
    /// The slice points into shared memory that the peer could overwrite if it broke the
    /// protocol; callers only copy it out and never read a byte twice to decide anything.
    pub fn payload(&self, p: &Peeked) -> &[u8] {
        // SAFETY: `peek` checked that the payload lies inside the data area and inside what the
        // producer published; the producer does not touch published bytes until we consume them.
        unsafe { std::slice::from_raw_parts(p.payload, p.header.len as usize) }
    }

    /// Moves past a peeked record (locally; [`Consumer::release`] publishes).
    pub fn consume(&mut self, p: &Peeked) {
        self.read = self.read.wrapping_add(p.size as u64);
    }

    /// Publishes the consumer index (and `handed`), freeing the space of everything consumed.
    /// Returns `true` when the producer said it waits for space (the caller must ring its
    /// doorbell); the flag is cleared.
    pub fn release(&mut self) -> bool {
        self.hand_out();
        self.release_to(self.read)
    }

    /// Publishes `index` (at most the read position, at least the last one released) as the
    /// consumer index: everything before it was delivered. Returns whether to ring the producer.
    pub fn release_to(&mut self, index: u64) -> bool {
        let c = self.mem.control();
        c.consumer.read.store(index, Ordering::SeqCst);
        c.producer.writer_waiting.load(Ordering::SeqCst) != 0
            && c.producer.writer_waiting.swap(0, Ordering::SeqCst) != 0
    }

    /// The published consumer index.
    pub fn released_index(&self) -> u64 {
        self.mem.control().consumer.read.load(Ordering::Relaxed)
    }

    /// The producer's last welcome: (consumer generation, producer generation, index).
    pub fn welcome(&self) -> (u32, u32, u64) {
        let c = self.mem.control();
        let w = c.producer.welcome.load(Ordering::SeqCst);
        let at = c.producer.welcome_at.load(Ordering::SeqCst);
        (w as u32, (w >> 32) as u32, at)
    }

    pub fn read_index(&self) -> u64 {
        self.read
    }
}

#[cfg(test)]
mod tests;
