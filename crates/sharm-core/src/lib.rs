//! sharm-core: the engine of sharmipc, with no Node.js in it.
//!
//! Two processes open the same named [`channel::Channel`]; each gets one side of a segment of
//! shared memory holding two single-producer/single-consumer rings, one per direction, and a
//! doorbell per side for sleeping. The building blocks, bottom up:
//!
//! - [`segment`]: the named shared-memory segment (wraps `shared_memory`);
//! - [`doorbell`]: the cross-process wake-up (wraps `raw_sync`);
//! - [`loop_bell`]: the wake-up of an event loop (Linux: a FIFO next to the segment);
//! - [`liveness`]: whether the process holding a side is still alive;
//! - [`core_sharing`]: a side that waits for its peer moves off the core the peer waits for;
//! - [`layout`]: where everything lies in the segment;
//! - [`record`] and [`ring`]: variable-length records in a lock-free SPSC ring;
//! - [`framing`]: chunking and reassembly of messages larger than a record;
//! - [`lobby`]: where the clients of a server take a place, each with a channel of its own;
//! - [`channel`]: attach, detach, the send queue, delivery and the wake-up thread, one file each;
//! - [`inspect`]: segments seen from outside, for diagnostics (list, inspect, clean).

pub mod channel;
pub mod core_sharing;
pub mod doorbell;
pub mod error;
pub mod framing;
#[doc(hidden)]
pub mod fuzzing;
pub mod inspect;
pub mod layout;
pub mod liveness;
pub mod lobby;
pub mod loop_bell;
pub mod record;
pub mod ring;
pub mod segment;
#[cfg(test)]
mod test_process;

pub use channel::{
    ArenaSink, Batch, Channel, ChannelOptions, Delivered, Departure, Payload, PeerEvent, PollInfo, SendOutcome, Spin,
    Waker, WakerGroup, LARGE,
};
pub use error::{Error, ProtocolError};
pub use record::{Kind, ALIGN, HEADER_LEN};
