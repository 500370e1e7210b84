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

/// Kinds of records.
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
}

impl Kind {
    /// TEMP
    pub const ALL: [Kind; 7] = [Kind::Request, Kind::Response, Kind::ErrorResponse, Kind::Message, Kind::Hello, Kind::Pad, Kind::Stream];
    /// TEMP
    pub fn is_sendable(self) -> bool {
        matches!(self, Kind::Request | Kind::Response | Kind::ErrorResponse | Kind::Message | Kind::Stream)
    }
    pub fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Request,
            2 => Kind::Response,
            3 => Kind::ErrorResponse,
            4 => Kind::Message,
            5 => Kind::Hello,
            6 => Kind::Pad,
            7 => Kind::Stream,
            _ => return None,
        })
    }
}

/// First chunk of a chunked message: payload starts with the total length (u64 LE).
pub const FLAG_FIRST: u8 = 1;
/// More chunks of this message follow.
pub const FLAG_MORE: u8 = 2;
/// A chunk that continues a message started by a `FLAG_FIRST` record.
pub const FLAG_CONT: u8 = 4;
const KNOWN_FLAGS: u8 = FLAG_FIRST | FLAG_MORE | FLAG_CONT;

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
    #[inline]
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.len.to_le_bytes());
        b[4] = self.kind as u8;
        b[5] = self.flags;
        b[6..8].copy_from_slice(&self.gen.to_le_bytes());
        b[8..16].copy_from_slice(&self.id.to_le_bytes());
        b
    }

    /// Decodes a header from raw bytes; rejects unknown kinds and flags.
    #[inline]
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<RecordHeader, ProtocolError> {
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let kind = Kind::from_u8(b[4]).ok_or(ProtocolError::BadKind(b[4]))?;
        let flags = b[5];
        if flags & !KNOWN_FLAGS != 0 {
            return Err(ProtocolError::BadFlags(flags));
        }
        let gen = u16::from_le_bytes([b[6], b[7]]);
        let id = u64::from_le_bytes(b[8..16].try_into().unwrap());
        Ok(RecordHeader {
            len,
            kind,
            flags,
            gen,
            id,
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
