//! Unit tests of the ring: order across wraps, full and empty, the sleep flags, corrupt input.

use super::*;
use crate::record::{FLAG_CONT, FLAG_FIRST, FLAG_MORE};

/// Heap memory shaped like a ring, 128-byte aligned. Hands out the one producer and consumers
/// (one at a time) of its ring.
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
        // SAFETY: `buf` has 256 bytes of slack beyond the ring, more than the at most 127 bytes
        // that aligning to 128 skips, so the result stays inside `buf`.
        let base = unsafe { p.add(p.align_offset(128)) };
        TestRing { buf, base, cap }
    }

    fn mem(&self) -> RingMem {
        let _ = &self.buf;
        // SAFETY: `base` is 128-aligned with RING_CONTROL_BYTES + cap zeroed bytes inside `buf`,
        // which lives as long as `self`; every test drops its ends before the TestRing, and makes
        // at most one producer and one consumer of the ring at a time.
        unsafe { RingMem::new(self.base, self.cap) }
    }

    pub fn producer(&self) -> Producer {
        Producer::new(self.mem())
    }

    pub fn consumer(&self, discard_backlog: bool) -> Consumer {
        Consumer::new(self.mem(), discard_backlog)
    }

    /// The control block, to play a misbehaving or sleeping peer.
    pub fn control(&self) -> &RingControl {
        // SAFETY: the control block lies at `base` inside `buf` (see `mem`) and holds only atomics.
        unsafe { &*(self.base as *const RingControl) }
    }

    pub fn data(&mut self) -> &mut [u8] {
        // SAFETY: the data area follows the control block inside `buf`, `cap` bytes long, and
        // `&mut self` keeps any other slice of it from being made meanwhile.
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
    let mut p = t.producer();
    let mut c = t.consumer(false);
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
    let mut p = t.producer();
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
    let mut c = t.consumer(false);
    for i in 0..4 {
        assert_eq!(pop(&mut c).unwrap().0.id, i);
    }
    assert!(pop(&mut c).is_none());
    assert!(p.try_push(hdr(Kind::Message, 5), &[], &body).unwrap());
}

#[test]
fn release_reports_a_waiting_writer_once() {
    let t = TestRing::new(4096);
    let mut p = t.producer();
    let mut c = t.consumer(false);
    p.try_push(hdr(Kind::Message, 1), &[], b"x").unwrap();
    t.control().consumer.reader_asleep.store(1, Ordering::SeqCst);
    assert!(p.publish(), "the sleeping reader must be rung");
    assert!(!p.publish(), "and only once");
    t.control().producer.writer_waiting.store(1, Ordering::SeqCst);
    let r = c.peek().unwrap().unwrap();
    c.consume(&r);
    assert!(c.release());
    assert!(!c.release());
}

#[test]
fn a_new_consumer_can_discard_the_backlog() {
    let t = TestRing::new(4096);
    let mut p = t.producer();
    p.try_push(hdr(Kind::Message, 1), &[], b"old").unwrap();
    p.publish();
    let mut c = t.consumer(true);
    assert!(pop(&mut c).is_none());
    p.try_push(hdr(Kind::Message, 2), &[], b"new").unwrap();
    p.publish();
    assert_eq!(pop(&mut c).unwrap().1, b"new");
}

#[test]
fn the_producer_reads_back_what_the_consumer_has_not_released() {
    let t = TestRing::new(4096);
    let mut p = t.producer();
    let mut c = t.consumer(false);
    let body = vec![1u8; 1000];
    // Wrap once (with a pad record) so the walk crosses the end of the data area.
    for i in 0..6 {
        while !p.try_push(hdr(Kind::Message, i), &[], &body).unwrap() {
            pop(&mut c).unwrap();
        }
        p.publish();
    }
    let ids: Vec<u64> = p.backlog(0).map(|r| r.header.id).collect();
    assert_eq!(ids, [2, 3, 4, 5]);
    while pop(&mut c).is_some() {}
    assert_eq!(p.backlog(0).count(), 0);
    assert!(p.try_push(hdr(Kind::Message, 6), &[], b"unpublished").unwrap());
    assert_eq!(p.backlog(0).count(), 0, "only what was published");
    p.publish();
    assert_eq!(p.backlog(0).map(|r| r.header.id).collect::<Vec<_>>(), [6]);
    // A consumer index the producer cannot trust ends the walk.
    t.control().consumer.read.store(1 << 40, Ordering::SeqCst);
    assert_eq!(p.backlog(0).count(), 0);
}

#[test]
fn corrupt_headers_and_indices_are_protocol_errors() {
    let mut t = TestRing::new(4096);
    let mut p = t.producer();
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
    let mut c = t.consumer(false);
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
    t.control().producer.write.store(1 << 40, Ordering::SeqCst);
    c = t.consumer(false);
    assert!(matches!(c.peek(), Err(ProtocolError::BadIndex { .. })));
    // Length longer than what was published.
    t.control().producer.write.store(24, Ordering::SeqCst);
    t.data()[0..4].copy_from_slice(&100u32.to_le_bytes());
    t.data()[5] = 0;
    c = t.consumer(false);
    assert!(matches!(c.peek(), Err(ProtocolError::RecordOverrun { .. })));
}

#[test]
fn spsc_across_threads_keeps_every_byte() {
    let t = TestRing::new(1 << 14);
    let mut p = t.producer();
    const N: u64 = 200_000;
    let writer = std::thread::spawn(move || {
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
    let mut c = t.consumer(false);
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
