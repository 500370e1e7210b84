//! A lock-free single-producer/single-consumer byte ring of variable-length records.
//!
//! Contract:
//! - Exactly one [`Producer`] writes a ring and exactly one [`Consumer`] reads it, usually in two
//!   processes. Both types are `Send` but not `Sync`, so each is driven by one thread at a time.
//! - The producer owns `write` (the producer line), the consumer owns `read` (the consumer line);
//!   each only ever stores its own index and loads the other's. Indices grow without wrapping
//!   (u64); the position in the data area is `index & (capacity - 1)`.
//! - Full: [`Producer::try_push`] returns `false` and writes nothing. Empty: [`Consumer::peek`]
//!   returns `None`. Neither blocks and neither takes a lock.
//! - A record never straddles the end of the data area: when it would, the producer fills the rest
//!   with a pad record (or, when fewer than a header's bytes are left, with nothing; both sides
//!   skip such a tail).
//! - The consumer trusts nothing it reads: the producer's index must be within `capacity` of its
//!   own, every header is decoded from a local copy and checked, and a record must lie inside what
//!   was published. Anything else is a [`ProtocolError`], never an out-of-bounds access.
//! - The producer checks the consumer's index the same way (a consumer cannot be ahead of it).
//!
//! Two flags support sleeping: `reader_asleep` (consumer line: "ring my doorbell when you write")
//! and `writer_waiting` (producer line: "ring my doorbell when you free space"). The flag, its
//! re-check and the index stores are `SeqCst`, so a sleeper and a waker cannot both miss each
//! other (the store-load pattern of Dekker's algorithm).

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::error::ProtocolError;
use crate::record::{record_size, Kind, RecordHeader, ALIGN, HEADER_LEN};

/// Producer cache lines (128 bytes: adjacent-line prefetchers pull pairs of lines).
#[repr(C, align(128))]
pub struct ProducerLine {
    pub write: AtomicU64,
    pub writer_waiting: AtomicU32,
}

/// Consumer cache lines.
#[repr(C, align(128))]
pub struct ConsumerLine {
    pub read: AtomicU64,
    pub reader_asleep: AtomicU32,
}

/// The control block at the start of each ring.
#[repr(C)]
pub struct RingControl {
    pub producer: ProducerLine,
    pub consumer: ConsumerLine,
}

const _: () = assert!(std::mem::size_of::<RingControl>() == crate::layout::RING_CONTROL_BYTES);

/// Raw view of one ring: its control block and data area.
#[derive(Clone, Copy)]
pub struct RingMem {
    ctl: *const RingControl,
    data: *mut u8,
    capacity: usize,
}

impl RingMem {
    /// # Safety
    /// `base` must point to `RING_CONTROL_BYTES + capacity` bytes that stay mapped, 128-byte
    /// aligned, for as long as any `Producer`/`Consumer` made from this value lives; `capacity`
    /// must be a power of two.
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
    /// Takes over the producer end, continuing at the published write index.
    pub fn new(mem: RingMem) -> Producer {
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

    pub fn mem(&self) -> &RingMem {
        &self.mem
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
        Consumer {
            mem,
            read,
            cached_write: read,
            _not_sync: PhantomData,
        }
    }

    /// A read-only walker over what the producer published and the consumer has not released;
    /// it changes nothing in shared memory (used by the producer to count unconfirmed records).
    pub fn observer(mem: RingMem) -> Consumer {
        let read = mem.control().consumer.read.load(Ordering::Acquire);
        Consumer {
            mem,
            read,
            cached_write: read,
            _not_sync: PhantomData,
        }
    }

    pub fn mem(&self) -> &RingMem {
        &self.mem
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
    pub fn peek(&mut self) -> Result<Option<Peeked>, ProtocolError> {
        let cap = self.mem.capacity;
        loop {
            let avail = self.available()?;
            if avail == 0 {
                return Ok(None);
            }
            let pos = self.read as usize & (cap - 1);
            let to_end = cap - pos;
            if to_end < HEADER_LEN {
                // Implicit pad: too little room for a header before the end.
                if avail < to_end as u64 {
                    return Err(ProtocolError::RecordOverrun {
                        need: to_end as u64,
                        available: avail,
                    });
                }
                self.read = self.read.wrapping_add(to_end as u64);
                continue;
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
            unsafe { std::ptr::copy_nonoverlapping(self.mem.data.add(pos), raw.as_mut_ptr(), HEADER_LEN) };
            let header = RecordHeader::decode(&raw)?;
            if header.kind == Kind::Pad {
                if header.len as usize != to_end - HEADER_LEN || avail < to_end as u64 {
                    return Err(ProtocolError::RecordOverrun {
                        need: to_end as u64,
                        available: avail.min(header.len as u64),
                    });
                }
                header.validate(0)?;
                self.read = self.read.wrapping_add(to_end as u64);
                continue;
            }
            header.validate(self.mem.max_record_payload())?;
            let size = record_size(header.len as usize);
            if size > to_end || size as u64 > avail {
                return Err(ProtocolError::RecordOverrun {
                    need: size as u64,
                    available: avail.min(to_end as u64),
                });
            }
            // SAFETY: pos + size <= capacity, checked just above.
            let payload = unsafe { self.mem.data.add(pos + HEADER_LEN) };
            return Ok(Some(Peeked { header, payload, size }));
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

    /// Publishes the consumer index, freeing space for the producer. Returns `true` when the
    /// producer said it waits for space (the caller must ring its doorbell); the flag is cleared.
    pub fn release(&mut self) -> bool {
        let c = self.mem.control();
        c.consumer.read.store(self.read, Ordering::SeqCst);
        c.producer.writer_waiting.load(Ordering::SeqCst) != 0
            && c.producer.writer_waiting.swap(0, Ordering::SeqCst) != 0
    }

    pub fn read_index(&self) -> u64 {
        self.read
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::{FLAG_CONT, FLAG_FIRST, FLAG_MORE};

    /// Heap memory shaped like a ring, 128-byte aligned.
    pub struct TestRing {
        buf: Vec<u128>,
        base: *mut u8,
        pub cap: usize,
    }

    impl TestRing {
        pub fn new(cap: usize) -> TestRing {
            let words = (crate::layout::RING_CONTROL_BYTES + cap + 256) / 16;
            let mut buf = vec![0u128; words];
            let p = buf.as_mut_ptr() as *mut u8;
            let base = unsafe { p.add(p.align_offset(128)) };
            TestRing { buf, base, cap }
        }
        pub fn mem(&self) -> RingMem {
            let _ = &self.buf;
            unsafe { RingMem::new(self.base, self.cap) }
        }
        pub fn data(&mut self) -> &mut [u8] {
            unsafe { std::slice::from_raw_parts_mut(self.base.add(crate::layout::RING_CONTROL_BYTES), self.cap) }
        }
    }

    fn hdr(kind: Kind, id: u64) -> RecordHeader {
        RecordHeader {
            len: 0,
            kind,
            flags: 0,
            gen: 0,
            id,
        }
    }

    fn pop(c: &mut Consumer) -> Option<(RecordHeader, Vec<u8>)> {
        let p = c.peek().unwrap()?;
        let v = c.payload(&p).to_vec();
        c.consume(&p);
        c.release();
        Some((p.header, v))
    }

    #[test]
    fn records_wrap_around_many_times_in_order() {
        let t = TestRing::new(4096);
        let mut p = Producer::new(t.mem());
        let mut c = Consumer::new(t.mem(), false);
        let mut next_read = 0u64;
        for i in 0..20_000u64 {
            let len = (i as usize * 37) % 900;
            let body: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
            while !p.try_push(hdr(Kind::Message, i), &[], &body).unwrap() {
                let (h, v) = pop(&mut c).expect("a full ring has something to read");
                assert_eq!(h.id, next_read);
                assert_eq!(v.len(), (h.id as usize * 37) % 900);
                next_read += 1;
            }
            p.publish();
        }
        while let Some((h, _)) = pop(&mut c) {
            assert_eq!(h.id, next_read);
            next_read += 1;
        }
        assert_eq!(next_read, 20_000);
        assert!(p.write_index() > 10 * 4096, "the ring wrapped many times");
    }

    #[test]
    fn a_full_ring_refuses_and_writes_nothing() {
        let t = TestRing::new(4096);
        let mut p = Producer::new(t.mem());
        let body = vec![7u8; 1000];
        let mut n = 0;
        while p.try_push(hdr(Kind::Message, n), &[], &body).unwrap() {
            n += 1;
        }
        assert_eq!(n, 4, "4 records of 1016 bytes fit in 4096");
        let before = p.write_index();
        assert!(!p.try_push(hdr(Kind::Message, 99), &[], &body).unwrap());
        assert_eq!(p.write_index(), before);
        p.publish();
        let mut c = Consumer::new(t.mem(), false);
        for i in 0..4 {
            assert_eq!(pop(&mut c).unwrap().0.id, i);
        }
        assert!(pop(&mut c).is_none());
        assert!(p.try_push(hdr(Kind::Message, 5), &[], &body).unwrap());
    }

    #[test]
    fn release_reports_a_waiting_writer_once() {
        let t = TestRing::new(4096);
        let mut p = Producer::new(t.mem());
        let mut c = Consumer::new(t.mem(), false);
        p.try_push(hdr(Kind::Message, 1), &[], b"x").unwrap();
        t.mem().control().consumer.reader_asleep.store(1, Ordering::SeqCst);
        assert!(p.publish(), "the sleeping reader must be rung");
        assert!(!p.publish(), "and only once");
        t.mem().control().producer.writer_waiting.store(1, Ordering::SeqCst);
        let r = c.peek().unwrap().unwrap();
        c.consume(&r);
        assert!(c.release());
        assert!(!c.release());
    }

    #[test]
    fn a_new_consumer_can_discard_the_backlog() {
        let t = TestRing::new(4096);
        let mut p = Producer::new(t.mem());
        p.try_push(hdr(Kind::Message, 1), &[], b"old").unwrap();
        p.publish();
        let mut c = Consumer::new(t.mem(), true);
        assert!(pop(&mut c).is_none());
        p.try_push(hdr(Kind::Message, 2), &[], b"new").unwrap();
        p.publish();
        assert_eq!(pop(&mut c).unwrap().1, b"new");
    }

    #[test]
    fn corrupt_headers_and_indices_are_protocol_errors() {
        let mut t = TestRing::new(4096);
        let mut p = Producer::new(t.mem());
        p.try_push(
            RecordHeader {
                flags: FLAG_FIRST | FLAG_MORE,
                ..hdr(Kind::Message, 1)
            },
            &10u64.to_le_bytes(),
            b"ab",
        )
        .unwrap();
        p.publish();
        // Claim a huge length.
        t.data()[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut c = Consumer::new(t.mem(), false);
        assert!(matches!(c.peek(), Err(ProtocolError::RecordTooLong { .. })));
        // Unknown kind.
        t.data()[0..4].copy_from_slice(&10u32.to_le_bytes());
        t.data()[4] = 99;
        assert!(matches!(c.peek(), Err(ProtocolError::BadKind(99))));
        // Bad flags.
        t.data()[4] = Kind::Message as u8;
        t.data()[5] = FLAG_CONT | FLAG_FIRST;
        assert!(matches!(c.peek(), Err(ProtocolError::BadFlags(_))));
        // Producer index beyond the capacity.
        t.mem().control().producer.write.store(1 << 40, Ordering::SeqCst);
        let mut c = Consumer::new(t.mem(), false);
        assert!(matches!(c.peek(), Err(ProtocolError::BadIndex { .. })));
        // Length longer than what was published.
        t.mem().control().producer.write.store(24, Ordering::SeqCst);
        t.data()[0..4].copy_from_slice(&100u32.to_le_bytes());
        t.data()[5] = 0;
        let mut c = Consumer::new(t.mem(), false);
        assert!(matches!(c.peek(), Err(ProtocolError::RecordOverrun { .. })));
    }

    #[test]
    fn spsc_across_threads_keeps_every_byte() {
        let t = TestRing::new(1 << 14);
        let mem = t.mem();
        struct SendMem(RingMem);
        unsafe impl Send for SendMem {}
        let pm = SendMem(mem);
        const N: u64 = 200_000;
        let writer = std::thread::spawn(move || {
            let pm = pm;
            let mut p = Producer::new(pm.0);
            for i in 0..N {
                let body = i.to_le_bytes();
                let len = (i % 50) as usize;
                let extra = vec![i as u8; len];
                while !p.try_push(hdr(Kind::Message, i), &body, &extra).unwrap() {
                    p.publish();
                    std::hint::spin_loop();
                }
                if i % 16 == 0 {
                    p.publish();
                }
            }
            p.publish();
        });
        let mut c = Consumer::new(mem, false);
        let mut i = 0;
        while i < N {
            if let Some(r) = c.peek().unwrap() {
                let v = c.payload(&r);
                assert_eq!(r.header.id, i);
                assert_eq!(&v[..8], &i.to_le_bytes());
                assert!(v[8..].iter().all(|&b| b == i as u8));
                assert_eq!(v.len(), 8 + (i % 50) as usize);
                c.consume(&r);
                c.release();
                i += 1;
            } else {
                std::hint::spin_loop();
            }
        }
        writer.join().unwrap();
        drop(t);
    }
}
