//! Byte layout of a channel segment. Both processes compute every offset from these constants and
//! from the ring capacity stored in the header, so the layout is the wire format: change anything
//! here and bump [`LAYOUT_VERSION`].
//!
//! ```text
//! 0       header page (HEADER_BYTES): identity, side slots, the two doorbells
//! 4096    ring 0 (side 0 -> side 1): control block (RING_CONTROL_BYTES), then `capacity` data bytes
//! ...     ring 1 (side 1 -> side 0): the same
//! ```

use std::sync::atomic::{AtomicU32, AtomicU64};

/// "SHARMIPC" read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHARMIPC");
/// Version of the byte layout of the segment (header, slots, ring control blocks).
pub const LAYOUT_VERSION: u32 = 2;
/// Version of the record format and message semantics inside the rings.
pub const PROTOCOL_VERSION: u32 = 3;

/// Size of the header page.
pub const HEADER_BYTES: usize = 4096;
/// Size of a ring's control block (two cache-line pairs: producer line, consumer line).
pub const RING_CONTROL_BYTES: usize = 256;
/// Space reserved for one doorbell (a raw_sync event) in the header page.
pub const DOORBELL_BYTES: usize = 512;
/// Offset of side `s`'s doorbell in the header page.
pub const fn doorbell_offset(side: usize) -> usize {
    256 + side * DOORBELL_BYTES
}

/// Smallest ring capacity accepted (bytes per direction).
pub const MIN_CAPACITY: usize = 4096;
/// Largest ring capacity accepted (bytes per direction).
pub const MAX_CAPACITY: usize = 1 << 30;

/// `init_state`: the creator has not finished writing the header yet.
pub const INIT_PENDING: u32 = 0;
/// `init_state`: header, rings and doorbells are ready.
pub const INIT_READY: u32 = 0x5EAD_1E55;
/// `init_state`: the creator died before finishing; the opener that set this removes the segment.
pub const INIT_ABANDONED: u32 = 0xDEAD_0001;

/// Bits of the `attach` word: which sides are taken, and whether the segment is being removed.
pub const ATTACH_SIDE: [u32; 2] = [1, 2];
pub const ATTACH_DEAD: u32 = 4;

/// Slot states.
pub const SLOT_FREE: u32 = 0;
pub const SLOT_ATTACHING: u32 = 1;
pub const SLOT_READY: u32 = 2;
/// Free, left by a side that found the header corrupt, so that its peer reports the corruption
/// rather than a departure (a peer that does not know this state sees a departure).
pub const SLOT_BROKEN: u32 = 3;

/// One side's slot in the header.
#[repr(C)]
pub struct Slot {
    /// Pid of the attached process; 0 while free or while a claim is in progress.
    pub pid: AtomicU32,
    /// `SLOT_FREE`, `SLOT_ATTACHING`, `SLOT_READY` or `SLOT_BROKEN`.
    pub state: AtomicU32,
    /// Bumped on every attach, so the peer can tell a restarted process from the old one.
    pub generation: AtomicU32,
    _pad: u32,
    /// Start time of the attached process (platform ticks), so a reused pid is not taken for it.
    pub start_time: AtomicU64,
    _reserved: [u64; 5],
}

/// The fixed part of the header page.
#[repr(C)]
pub struct Header {
    pub magic: AtomicU64,
    pub layout_version: AtomicU32,
    pub protocol_version: AtomicU32,
    pub capacity: AtomicU64,
    pub init_state: AtomicU32,
    pub attach: AtomicU32,
    pub creator_pid: AtomicU32,
    _pad: [u32; 9],
    pub slots: [Slot; 2],
}

const _: () = assert!(std::mem::size_of::<Slot>() == 64);
const _: () = assert!(std::mem::size_of::<Header>() <= doorbell_offset(0));
const _: () = assert!(doorbell_offset(2) <= HEADER_BYTES);

/// Offset of ring `r`'s control block.
pub const fn ring_offset(r: usize, capacity: usize) -> usize {
    HEADER_BYTES + r * (RING_CONTROL_BYTES + capacity)
}

/// Total segment size for a ring capacity.
pub const fn segment_bytes(capacity: usize) -> usize {
    ring_offset(2, capacity)
}

/// Is `capacity` an accepted ring capacity?
pub fn capacity_is_valid(capacity: usize) -> bool {
    capacity.is_power_of_two() && (MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity)
}
