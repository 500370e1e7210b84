//! Records: the unit written into a ring.
//!
//! Every record starts with a 16-byte little-endian header, followed by `len` payload bytes, and
//! occupies `record_size(len)` bytes (8-byte aligned). A message that does not fit in one record is
//! split into chunks: the first chunk carries `FLAG_FIRST | FLAG_MORE` and starts its payload with
//! the message's total length (u64), middle chunks carry `FLAG_CONT | FLAG_MORE`, the last one
//! `FLAG_CONT`. Chunks of one message are written back to back.
//!
//! Nothing read from shared memory is trusted: [`RecordHeader::decode`] checks the kind and the
//! flags, and [`RecordHeader::validate`] checks the length against the ring's limits, before the
//! ring or the reassembler uses them.

use crate::error::ProtocolError;

/// Size of a record header.
pub const HEADER_LEN: usize = 16;
/// Records start at multiples of this.
pub const ALIGN: usize = 8;

/// Kinds of records. The numbers are the wire protocol: [`Kind::ALL`] is their one list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// An RPC request; `id` is the caller's request id.
    Request = 1,
    /// A successful answer; `id` is the request id being answered.
    Response = 2,
    /// A failed answer (the handler threw); payload is the UTF-8 error message.
    ErrorResponse = 3,
    /// Send-and-forget.
    Message = 4,
    /// First record a side writes after it attaches; `id` is its generation.
    Hello = 5,
    /// Filler up to the end of the data area; the next record starts at offset 0.
    Pad = 6,
    /// A frame of a stream: `id` is the stream id, `gen` carries the frame type (the layer
    /// above defines both).
    Stream = 7,
    /// The asker no longer waits for request `id` (it timed out or was aborted): the answering
    /// side drops it, and an answer it gives later goes nowhere. No payload (one is ignored).
    Cancel = 8,
}

impl Kind {
    /// Every kind, in the order of its number: `ALL[i] as u8 == i + 1` (checked at compile time).
    pub const ALL: [Kind; 8] = [
        Kind::Request,
        Kind::Response,
        Kind::ErrorResponse,
        Kind::Message,
        Kind::Hello,
        Kind::Pad,
        Kind::Stream,
        Kind::Cancel,
    ];

    /// The kind numbered `v`, if there is one.
    #[inline]
    pub fn from_u8(v: u8) -> Option<Kind> {
        Kind::ALL.get((v as usize).wrapping_sub(1)).copied()
    }

    /// May a user-level send carry this kind? (Hello and Pad are written by the channel itself.)
    #[inline]
    pub const fn is_sendable(self) -> bool {
        matches!(
            self,
            Kind::Request | Kind::Response | Kind::ErrorResponse | Kind::Message | Kind::Stream | Kind::Cancel
        )
    }

    /// Is this an answer to a request (its `id` is the request's, its `gen` the asker's)?
    #[inline]
    pub const fn is_answer(self) -> bool {
        matches!(self, Kind::Response | Kind::ErrorResponse)
    }
}

const _: () = {
    let mut i = 0;
    while i < Kind::ALL.len() {
        assert!(
            Kind::ALL[i] as usize == i + 1,
            "Kind::ALL is in the order of the numbers, from 1"
        );
        i += 1;
    }
};

/// First chunk of a chunked message: payload starts with the total length (u64 LE).
pub const FLAG_FIRST: u8 = 1;
/// More chunks of this message follow.
pub const FLAG_MORE: u8 = 2;
/// A chunk that continues a message started by a `FLAG_FIRST` record.
pub const FLAG_CONT: u8 = 4;
/// Every flag bit a record may carry.
pub const KNOWN_FLAGS: u8 = FLAG_FIRST | FLAG_MORE | FLAG_CONT;

/// A decoded record header (a local copy: the shared bytes may change after it was read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// Payload bytes in this record.
    pub len: u32,
    pub kind: Kind,
    pub flags: u8,
    /// For answers: the low 16 bits of the generation of the side that asked (answers for an
    /// earlier incarnation of a process are dropped). Otherwise 0.
    pub gen: u16,
    pub id: u64,
}

/// Bytes a record with `len` payload bytes occupies in a ring.
#[inline]
pub const fn record_size(len: usize) -> usize {
    (HEADER_LEN + len + ALIGN - 1) & !(ALIGN - 1)
}

impl RecordHeader {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `out` (panics if `out` is shorter).
    #[inline]
    pub fn encode_into(&self, out: &mut [u8]) {
        let b = &mut out[..HEADER_LEN];
        b[0..4].copy_from_slice(&self.len.to_le_bytes());
        b[4] = self.kind as u8;
        b[5] = self.flags;
        b[6..8].copy_from_slice(&self.gen.to_le_bytes());
        b[8..16].copy_from_slice(&self.id.to_le_bytes());
    }

    /// The header's [`HEADER_LEN`] bytes.
    #[inline]
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        self.encode_into(&mut b);
        b
    }

    /// Decodes the header at the start of `b`; rejects unknown kinds and flags, and fewer than
    /// [`HEADER_LEN`] bytes. The length is not checked here (see [`RecordHeader::validate`]).
    #[inline]
    pub fn decode(b: &[u8]) -> Result<RecordHeader, ProtocolError> {
        let Some(b) = b.first_chunk::<HEADER_LEN>() else {
            return Err(ProtocolError::RecordOverrun {
                need: HEADER_LEN as u64,
                available: b.len() as u64,
            });
        };
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let kind = Kind::from_u8(b[4]).ok_or(ProtocolError::BadKind(b[4]))?;
        let flags = b[5];
        if flags & !KNOWN_FLAGS != 0 {
            return Err(ProtocolError::BadFlags(flags));
        }
        let gen = u16::from_le_bytes([b[6], b[7]]);
        let id = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
        Ok(RecordHeader {
            len,
            kind,
            flags,
            gen,
            id,
        })
    }

    /// Bytes the whole record (header, payload, padding) occupies.
    #[inline]
    pub const fn size(&self) -> usize {
        record_size(self.len as usize)
    }

    /// Checks the flag combination and the length against `max_payload` (the largest payload a
    /// record may carry in this ring).
    pub fn validate(&self, max_payload: usize) -> Result<(), ProtocolError> {
        if self.kind == Kind::Pad {
            // A pad's length is checked by the ring against the bytes left to the end.
            return if self.flags == 0 {
                Ok(())
            } else {
                Err(ProtocolError::BadFlags(self.flags))
            };
        }
        if self.len as usize > max_payload {
            return Err(ProtocolError::RecordTooLong {
                len: self.len as u64,
                max: max_payload as u64,
            });
        }
        let f = self.flags;
        let ok = matches!(f, 0) // whole message
            || f == FLAG_FIRST | FLAG_MORE
            || f == FLAG_CONT | FLAG_MORE
            || f == FLAG_CONT;
        if !ok || (self.kind == Kind::Hello && f != 0) {
            return Err(ProtocolError::BadFlags(f));
        }
        if f & FLAG_FIRST != 0 && (self.len as usize) < 8 {
            return Err(ProtocolError::BadChunk(
                "a first chunk is shorter than its 8-byte length prefix",
            ));
        }
        Ok(())
    }
}

/// One record encoded in a byte slice: its decoded header and where it lies.
#[derive(Clone, Copy, Debug)]
pub struct Encoded<'a> {
    pub header: RecordHeader,
    /// Offset of the header in the slice.
    pub at: usize,
    /// The record's bytes in the slice: header, payload and as much of the padding as is there.
    pub bytes: &'a [u8],
}

impl<'a> Encoded<'a> {
    /// The record at offset `at` of `bytes`, if its header decodes and its payload lies inside
    /// `bytes` (its padding may be cut off at the end).
    #[inline]
    pub fn read(bytes: &'a [u8], at: usize) -> Option<Encoded<'a>> {
        let rest = bytes.get(at..)?;
        let header = RecordHeader::decode(rest).ok()?;
        if rest.len() - HEADER_LEN < header.len as usize {
            return None;
        }
        let bytes = &rest[..header.size().min(rest.len())];
        Some(Encoded { header, at, bytes })
    }

    /// The payload bytes.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes[HEADER_LEN..HEADER_LEN + self.header.len as usize]
    }

    /// Offset just past the record (its padding, where it is there).
    #[inline]
    pub fn end(&self) -> usize {
        self.at + self.bytes.len()
    }

    /// Is the whole record there, padding included?
    #[inline]
    pub fn is_whole(&self) -> bool {
        self.bytes.len() == self.header.size()
    }
}

/// Records encoded back to back in a byte slice, in the ring's format: each a 16-byte header
/// ([`RecordHeader::encode`]) and its payload, padded to [`ALIGN`]. This is also the format of a
/// batch staged for `Channel::send_batch`. The walk stops at the first record that does not
/// decode or whose payload runs past the end.
#[derive(Clone, Debug)]
pub struct Records<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Records<'a> {
    /// The records of `bytes` from offset `at` on.
    #[inline]
    pub fn from(bytes: &'a [u8], at: usize) -> Records<'a> {
        Records { bytes, at }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Encoded<'a>;

    #[inline]
    fn next(&mut self) -> Option<Encoded<'a>> {
        let r = Encoded::read(self.bytes, self.at)?;
        self.at = r.end();
        Some(r)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Appends a whole record (no flags, generation 0) to `out`, as a batch is staged.
    pub(crate) fn append_record(out: &mut Vec<u8>, kind: Kind, id: u64, payload: &[u8]) {
        let h = RecordHeader {
            len: payload.len() as u32,
            kind,
            flags: 0,
            gen: 0,
            id,
        };
        let at = out.len();
        out.resize(at + h.size(), 0);
        h.encode_into(&mut out[at..]);
        out[at + HEADER_LEN..at + HEADER_LEN + payload.len()].copy_from_slice(payload);
    }

    /// The header of a whole message record with id 1, encoded.
    fn message_header() -> [u8; HEADER_LEN] {
        let mut b = Vec::new();
        append_record(&mut b, Kind::Message, 1, &[]);
        b.try_into().unwrap()
    }

    #[test]
    fn header_round_trips() {
        let h = RecordHeader {
            len: 77,
            kind: Kind::Response,
            flags: FLAG_CONT,
            gen: 9,
            id: u64::MAX - 3,
        };
        assert_eq!(RecordHeader::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn every_kind_round_trips_through_the_codec() {
        for (i, &kind) in Kind::ALL.iter().enumerate() {
            assert_eq!(kind as usize, i + 1);
            assert_eq!(Kind::from_u8(kind as u8), Some(kind));
            let h = RecordHeader {
                len: 3,
                kind,
                flags: 0,
                gen: 0xBEEF,
                id: 0x0102_0304_0506_0708,
            };
            let mut b = [0xAAu8; HEADER_LEN + 4];
            h.encode_into(&mut b);
            assert_eq!(b[4], kind as u8);
            assert_eq!(&b[HEADER_LEN..], &[0xAA; 4], "encode writes the header only");
            assert_eq!(RecordHeader::decode(&b).unwrap(), h);
            assert_eq!(RecordHeader::decode(&h.encode()).unwrap(), h);
        }
        let sendable: Vec<u8> = Kind::ALL.iter().filter(|k| k.is_sendable()).map(|&k| k as u8).collect();
        assert_eq!(sendable, [1, 2, 3, 4, 7, 8]);
    }

    #[test]
    fn unknown_kinds_flags_and_short_headers_are_refused() {
        let (first, last) = (Kind::ALL[0] as u8, *Kind::ALL.last().unwrap() as u8);
        for bad in [0, last + 1, 0xFF] {
            assert_eq!(Kind::from_u8(bad), None);
            let mut b = message_header();
            b[4] = bad;
            let e = RecordHeader::decode(&b).unwrap_err();
            assert_eq!(e, ProtocolError::BadKind(bad));
            assert_eq!(
                e.to_string(),
                format!("unknown record kind {bad} (expected {first}..={last})")
            );
        }
        let mut b = message_header();
        b[5] = 8;
        let e = RecordHeader::decode(&b).unwrap_err();
        assert_eq!(e, ProtocolError::BadFlags(8));
        assert_eq!(
            e.to_string(),
            format!("invalid record flags 0x08 (known bits {KNOWN_FLAGS:#04x})")
        );
        assert!(matches!(
            RecordHeader::decode(&b[..HEADER_LEN - 1]),
            Err(ProtocolError::RecordOverrun {
                need: 16,
                available: 15
            })
        ));
    }

    #[test]
    fn records_walk_a_slice_and_stop_at_what_does_not_decode_or_fit() {
        let mut bytes = Vec::new();
        for (id, body) in [(1u64, &b"abc"[..]), (2, b""), (3, b"12345678")] {
            append_record(&mut bytes, Kind::Message, id, body);
        }
        let all: Vec<(u64, Vec<u8>, usize)> = Records::from(&bytes, 0)
            .map(|r| (r.header.id, r.payload().to_vec(), r.at))
            .collect();
        assert_eq!(
            all,
            vec![(1, b"abc".to_vec(), 0), (2, vec![], 24), (3, b"12345678".to_vec(), 40)]
        );
        assert_eq!(Records::from(&bytes, 24).count(), 2);
        // A cut-off payload ends the walk; a cut-off padding does not.
        assert_eq!(Records::from(&bytes[..bytes.len() - 1], 0).count(), 2);
        let cut = &bytes[..24 + 16];
        let last = Records::from(cut, 0).last().unwrap();
        assert!(last.is_whole());
        let short = &bytes[..HEADER_LEN + 3];
        let r = Records::from(short, 0).next().unwrap();
        assert!(!r.is_whole());
        assert_eq!(r.end(), short.len());
        bytes[24 + 4] = 0;
        assert_eq!(Records::from(&bytes, 0).count(), 1, "an unknown kind ends the walk");
    }

    #[test]
    fn record_size_is_aligned() {
        assert_eq!(record_size(0), 16);
        assert_eq!(record_size(1), 24);
        assert_eq!(record_size(8), 24);
        assert_eq!(record_size(9), 32);
    }

    proptest! {
        /// Any 16 bytes either decode to a header that validates or give a protocol error;
        /// nothing panics.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::array::uniform16(any::<u8>()), max in 0usize..1_000_000) {
            if let Ok(h) = RecordHeader::decode(&bytes) {
                let _ = h.validate(max);
                prop_assert_eq!(RecordHeader::decode(&h.encode()).unwrap(), h);
            }
        }
    }
}
