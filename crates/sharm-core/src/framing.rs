//! Reassembly of chunked messages on the reading side.
//!
//! Input is a sequence of (header, payload) pairs as the ring yields them; output is whole
//! messages. Every rule of the chunk sequence is checked (see `record`), the claimed total length
//! is checked against `max_message` before anything is allocated, and the buffer never grows past
//! the claimed total. A violation is a [`ProtocolError`]; nothing panics.
//!
//! After attaching, a side may find the tail of a message that was meant for its predecessor
//! (continuation chunks without their first chunk). In `resync` mode such chunks are skipped
//! until the first record that starts a message.

use crate::error::ProtocolError;
use crate::record::{Kind, RecordHeader, FLAG_CONT, FLAG_FIRST, FLAG_MORE};

/// What one record amounted to.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// A whole message in one record: the payload as it lies in the ring.
    Whole(&'a [u8]),
    /// The last chunk of a chunked message arrived: the reassembled message.
    Done(Vec<u8>),
    /// A chunk was taken; the message is not complete yet.
    Partial,
    /// A continuation of a message that started before we attached, skipped.
    Skipped,
}

struct InProgress {
    kind: Kind,
    id: u64,
    total: usize,
    buf: Vec<u8>,
}

pub struct Reassembler {
    max_message: usize,
    current: Option<InProgress>,
    resync: bool,
}

impl Reassembler {
    pub fn new(max_message: usize) -> Reassembler {
        Reassembler {
            max_message,
            current: None,
            resync: true,
        }
    }

    /// Forgets a partly received message (the peer was replaced).
    pub fn reset(&mut self) {
        self.current = None;
        self.resync = false;
    }

    /// Is a chunked message partly received?
    pub fn in_progress(&self) -> bool {
        self.current.is_some()
    }

    /// Takes one record. `payload` is the record's payload (`h.len` bytes).
    pub fn push<'a>(&mut self, h: &RecordHeader, payload: &'a [u8]) -> Result<Step<'a>, ProtocolError> {
        debug_assert_eq!(payload.len(), h.len as usize);
        let is_cont = h.flags & FLAG_CONT != 0;
        if !is_cont {
            self.resync = false;
            if self.current.is_some() {
                return Err(ProtocolError::BadChunk(
                    "a new message started before the previous one ended",
                ));
            }
        }
        if h.flags & FLAG_FIRST != 0 {
            let total = u64::from_le_bytes(payload[..8].try_into().unwrap());
            if total > self.max_message as u64 {
                return Err(ProtocolError::MessageTooLarge {
                    len: total,
                    max: self.max_message as u64,
                });
            }
            let total = total as usize;
            let body = &payload[8..];
            if body.len() >= total {
                return Err(ProtocolError::BadChunk(
                    "a first chunk holds the whole message but says more follow",
                ));
            }
            let mut buf = Vec::with_capacity(total);
            buf.extend_from_slice(body);
            self.current = Some(InProgress {
                kind: h.kind,
                id: h.id,
                total,
                buf,
            });
            return Ok(Step::Partial);
        }
        if !is_cont {
            if payload.len() > self.max_message {
                return Err(ProtocolError::MessageTooLarge {
                    len: payload.len() as u64,
                    max: self.max_message as u64,
                });
            }
            return Ok(Step::Whole(payload));
        }
        let Some(cur) = self.current.as_mut() else {
            if self.resync {
                return Ok(Step::Skipped);
            }
            return Err(ProtocolError::BadChunk(
                "a continuation chunk arrived without a first chunk",
            ));
        };
        if cur.kind != h.kind || cur.id != h.id {
            return Err(ProtocolError::BadChunk(
                "a chunk belongs to another message than the one in progress",
            ));
        }
        if cur.buf.len() + payload.len() > cur.total {
            return Err(ProtocolError::BadChunk(
                "chunks add up to more than the announced length",
            ));
        }
        cur.buf.extend_from_slice(payload);
        if h.flags & FLAG_MORE != 0 {
            if cur.buf.len() == cur.total {
                return Err(ProtocolError::BadChunk(
                    "the announced length is reached but more chunks are announced",
                ));
            }
            return Ok(Step::Partial);
        }
        if cur.buf.len() != cur.total {
            return Err(ProtocolError::BadChunk(
                "the last chunk ends before the announced length",
            ));
        }
        Ok(Step::Done(self.current.take().unwrap().buf))
    }
}

/// Splits a message into the records a producer writes, for a ring whose records carry at most
/// `max_payload` bytes. Yields (flags, prefix, body range).
pub fn chunk_plan(total: usize, sent: usize, max_payload: usize) -> (u8, Option<[u8; 8]>, std::ops::Range<usize>) {
    if total <= max_payload {
        return (0, None, 0..total);
    }
    if sent == 0 {
        return (
            FLAG_FIRST | FLAG_MORE,
            Some((total as u64).to_le_bytes()),
            0..max_payload - 8,
        );
    }
    let end = (sent + max_payload).min(total);
    let flags = if end < total { FLAG_CONT | FLAG_MORE } else { FLAG_CONT };
    (flags, None, sent..end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(kind: Kind, flags: u8, id: u64, len: usize) -> RecordHeader {
        RecordHeader {
            len: len as u32,
            kind,
            flags,
            gen: 0,
            id,
        }
    }

    /// Runs a message through `chunk_plan` and the reassembler.
    fn round_trip(msg: &[u8], max_payload: usize) -> Vec<u8> {
        let mut r = Reassembler::new(1 << 30);
        let mut sent = 0;
        loop {
            let (flags, prefix, range) = chunk_plan(msg.len(), sent, max_payload);
            let mut payload = prefix.map(|p| p.to_vec()).unwrap_or_default();
            payload.extend_from_slice(&msg[range.clone()]);
            assert!(payload.len() <= max_payload);
            sent = range.end;
            match r.push(&h(Kind::Message, flags, 7, payload.len()), &payload).unwrap() {
                Step::Whole(p) => return p.to_vec(),
                Step::Done(v) => return v,
                Step::Partial => {}
                Step::Skipped => panic!("nothing to skip"),
            }
        }
    }

    #[test]
    fn chunked_messages_reassemble_byte_exact() {
        for len in [0, 1, 100, 1000, 1001, 1008, 4096, 100_000] {
            let msg: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            assert_eq!(round_trip(&msg, 1000), msg, "len {len}");
        }
    }

    #[test]
    fn a_claimed_length_over_the_maximum_is_refused_before_allocating() {
        let mut r = Reassembler::new(1 << 20);
        let mut p = (4u64 << 30).to_le_bytes().to_vec();
        p.extend_from_slice(b"abc");
        let e = r
            .push(&h(Kind::Request, FLAG_FIRST | FLAG_MORE, 1, p.len()), &p)
            .unwrap_err();
        assert_eq!(
            e,
            ProtocolError::MessageTooLarge {
                len: 4 << 30,
                max: 1 << 20
            }
        );
    }

    #[test]
    fn broken_sequences_are_errors_and_leftovers_are_skipped_only_after_attach() {
        let mut r = Reassembler::new(1000);
        assert_eq!(
            r.push(&h(Kind::Message, FLAG_CONT, 1, 2), b"xy").unwrap(),
            Step::Skipped
        );
        assert_eq!(r.push(&h(Kind::Message, 0, 2, 2), b"ok").unwrap(), Step::Whole(b"ok"));
        assert!(r.push(&h(Kind::Message, FLAG_CONT, 1, 2), b"xy").is_err());

        let mut r = Reassembler::new(1000);
        let mut first = 20u64.to_le_bytes().to_vec();
        first.extend_from_slice(b"0123456789");
        r.push(&h(Kind::Message, FLAG_FIRST | FLAG_MORE, 5, first.len()), &first)
            .unwrap();
        assert!(
            r.push(&h(Kind::Message, FLAG_CONT, 6, 10), b"0123456789").is_err(),
            "other id"
        );
        let mut r2 = Reassembler::new(1000);
        r2.push(&h(Kind::Message, FLAG_FIRST | FLAG_MORE, 5, first.len()), &first)
            .unwrap();
        assert!(
            r2.push(&h(Kind::Message, FLAG_CONT, 5, 11), b"0123456789a").is_err(),
            "too long"
        );
        let mut r3 = Reassembler::new(1000);
        r3.push(&h(Kind::Message, FLAG_FIRST | FLAG_MORE, 5, first.len()), &first)
            .unwrap();
        assert!(
            r3.push(&h(Kind::Message, FLAG_CONT, 5, 3), b"012").is_err(),
            "too short"
        );
        let mut r4 = Reassembler::new(1000);
        r4.push(&h(Kind::Message, FLAG_FIRST | FLAG_MORE, 5, first.len()), &first)
            .unwrap();
        assert!(
            r4.push(&h(Kind::Message, 0, 9, 1), b"z").is_err(),
            "interleaved message"
        );
        r4.reset();
        assert!(!r4.in_progress());
    }

    proptest! {
        /// Arbitrary record sequences never panic and never buffer more than the maximum.
        #[test]
        fn arbitrary_records_never_panic(recs in proptest::collection::vec((1u8..=4, 0u8..8, 0u64..3, proptest::collection::vec(any::<u8>(), 8..64)), 0..40)) {
            let mut r = Reassembler::new(256);
            for (kind, flags, id, payload) in recs {
                let hd = h(Kind::from_u8(kind).unwrap(), flags, id, payload.len());
                if hd.validate(64).is_err() { continue; }
                match r.push(&hd, &payload) {
                    Ok(Step::Done(v)) => prop_assert!(v.len() <= 256),
                    Ok(_) => {}
                    Err(_) => r = Reassembler::new(256),
                }
            }
        }

        #[test]
        fn any_message_survives_any_chunk_size(msg in proptest::collection::vec(any::<u8>(), 0..5000), max_payload in 9usize..700) {
            prop_assert_eq!(round_trip(&msg, max_payload), msg);
        }
    }
}
