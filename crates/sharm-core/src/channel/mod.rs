//! A channel: one side of a named segment, with its send queue, its delivery, and the wake-up
//! thread.
//!
//! Threads: a [`Channel`] is driven by one thread (in Node, the JS thread): it is the only
//! producer of the outgoing ring and the only consumer of the incoming ring. A [`Waker`] runs on a
//! second thread; it never reads or writes records. It only watches (incoming data, space freed
//! for a waiting sender, the peer's slot), sleeps on the side's doorbell when there is nothing to
//! watch, and calls `notify` so that the driving thread calls [`Channel::poll`].
//!
//! Attach protocol (both processes run the same code; there are no roles):
//! 1. Create the segment exclusively; if that works, claim it (`creator_pid`, by a CAS from 0),
//!    initialise it and take side 0.
//! 2. Otherwise open it, wait until its creator finished, check magic and versions, reap sides
//!    whose process is dead, and take a free side by a CAS on the `attach` word. No live side at
//!    all means the segment is stale: whoever marks it DEAD (a CAS from 0) removes it and starts
//!    over with a fresh one. A creator that died half-way is taken over by a CAS on
//!    `creator_pid`, and its segment removed the same way.
//! 3. Taking a side: state ATTACHING, bump the generation, record pid and start time, queue a
//!    HELLO record, state READY, ring the peer, welcome the peer if one is attached.
//! 4. Welcome: the incoming ring may still hold what its producer wrote for our predecessor.
//!    We do not skip it ourselves: the producer first accounts for it (it was not delivered),
//!    then welcomes us (our generation and the index where our records start, in its line of
//!    the ring), and only then do we read, from there. A producer welcomes every peer
//!    generation it sees attached, before it writes anything for it.
//!
//! Leaving: state FREE, clear the `attach` bit; the side that clears the last bit also sets
//! DEAD in the same CAS and unlinks the name, so no newcomer can join a segment being removed.
//!
//! Removal can fail: in the sticky `/dev/shm`, a segment shared with other users (`mode`) may
//! be removed only by its owner. A last side out that cannot remove it clears DEAD again, which
//! leaves a stale segment; an opener that holds a stale or abandoned segment but cannot remove it
//! initialises it again in place (init state PENDING with its pid as `creator_pid`, so others
//! wait for it, and take over if it dies) and takes side 0. A segment shorter than its header
//! says (truncated) is removed or rebuilt the same way once no live process holds it.
//!
//! The rooms, along the path of a request:
//! - `attach`: open, claim, reap, generations, leave;
//! - `peer`: the connection state and the ordered peer events ([`PeerEvent`]);
//! - `departure`: what a departed peer did not get ([`Departure`]);
//! - `send`: the send queue, single and batched sends, flushing the queue into the ring;
//! - `wake`: the wake-up thread and every spin/sleep decision of the core;
//! - `deliver`: draining the incoming ring into a batch or a caller's arena, delivery accounting;
//! - `sync`: the blocking request;
//! - `header_check`: what a side checks in the segment header while attached.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::doorbell::Doorbell;
use crate::error::{Error, ProtocolError};
use crate::framing::Reassembler;
use crate::layout::{Header, ATTACH_DEAD};
use crate::loop_bell::{OwnBell, PeerBell};
use crate::ring::{Consumer, Producer, RingWatch};
use crate::segment::Segment;

mod attach;
mod deliver;
mod departure;
mod header_check;
mod peer;
mod send;
#[cfg(test)]
mod send_queue_tests;
mod sync;
#[cfg(test)]
mod tests;
mod wake;
mod wake_group;

pub use deliver::{ArenaSink, Batch, Delivered, Payload, PollInfo, LARGE};
pub use departure::Departure;
use peer::Peer;
pub use peer::PeerEvent;
use send::SendQueue;
pub use send::STAGED_HEADER;
pub use wake::{Spin, Waker, LIVENESS_INTERVAL};
pub use wake_group::WakerGroup;

/// Frees the sides of `h` held by dead processes, as an opener does (for [`crate::inspect::clean`]).
#[cfg(target_os = "linux")]
pub(crate) fn reap_dead_sides(h: &Header) {
    attach::reap_if_dead(h, 0);
    attach::reap_if_dead(h, 1);
}

/// Options of [`Channel::open`].
#[derive(Clone, Debug)]
pub struct ChannelOptions {
    /// Ring bytes per direction (power of two). Used when this side creates the segment; a side
    /// that joins an existing segment uses the capacity it was created with.
    pub capacity: usize,
    /// Bytes accepted but not yet written into the ring before `send` refuses.
    pub max_queue_bytes: usize,
    /// Largest message either side may send or will accept.
    pub max_message_bytes: usize,
    /// How long the wake-up thread spins before it sleeps.
    pub spin: Duration,
    /// Access mode of the segment when this side creates it (0o600: owner only).
    pub mode: u32,
    /// Make an event-loop bell ([`crate::loop_bell`]) for this side, whose fd the caller takes
    /// ([`Channel::take_loop_bell`]) and watches: then the peer's rings wake that watcher, and the
    /// wake-up thread only checks the peer's liveness and the header.
    pub loop_bell: bool,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions {
            capacity: 1 << 20,
            max_queue_bytes: 20_000_000,
            max_message_bytes: 256 << 20,
            spin: Duration::from_micros(20),
            mode: 0o600,
            loop_bell: false,
        }
    }
}

/// What `send` did with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// Wholly in the ring.
    Written,
    /// (Partly) in the local queue; it goes out as the ring frees up or the peer attaches.
    Queued,
}

/// State shared by the driving thread and the wake-up thread.
struct Shared {
    side: usize,
    own_bell: Doorbell,
    peer_bell: Doorbell,
    /// The incoming and outgoing rings, as the wake-up thread may look at them.
    rx: RingWatch,
    tx: RingWatch,
    header: *const Header,
    /// This side's generation.
    my_gen: u32,
    /// The incoming ring was opened (its producer welcomed us).
    rx_open: AtomicBool,
    /// Where the driving thread's reading of the incoming ring stands (after its last poll).
    rx_cursor: AtomicU64,
    spin: Duration,
    stop: AtomicBool,
    broken: AtomicBool,
    /// Why this side's own wake-up work stopped (a panic in it): the channel is broken, and its
    /// next call reports this.
    wake_failed: OnceLock<String>,
    /// The driving thread has queued bytes waiting for ring space.
    tx_waiting: AtomicBool,
    /// Consumer index of the outgoing ring when the driving thread last flushed.
    last_tx_read: AtomicU64,
    /// A notification is out and the driving thread has not polled since.
    notified: AtomicBool,
    /// The peer's slot as the driving thread's last poll saw it (its events were handed out
    /// then), packed by [`pack_view`]: a slot that differs has news for the next poll, however
    /// many changes ago the wake-up thread last looked.
    polled_view: AtomicU64,
    /// The newcomer's slot as the poll that saw it join read it, for the wake-up thread's next
    /// header look (see [`header_check::HeaderWatch::joined`]).
    join_look: std::sync::Mutex<Option<header_check::SlotLook>>,
    /// The driving thread polls the rings itself (latency mode): the wake-up thread stays parked.
    driving: AtomicBool,
    /// The event loop watches this side's loop bell (its fd was taken): it sleeps there, not the
    /// wake-up thread on the doorbell.
    loop_mode: AtomicBool,
    thread: OnceLock<std::thread::Thread>,
    unlink: AtomicBool,
    seg: Segment,
}

// SAFETY: `header` points into `seg`, which lives as long as `Shared`, and the ring watches stay
// valid as long as `seg` is mapped; all shared state is accessed through atomics, and the SPSC
// ends are owned by the driving thread's `Channel`, not by `Shared`.
unsafe impl Send for Shared {}
// SAFETY: as above: every field reached through `&Shared` is an atomic, a doorbell (a
// cross-process event made to be used from any thread) or immutable.
unsafe impl Sync for Shared {}

impl Drop for Shared {
    fn drop(&mut self) {
        if *self.unlink.get_mut() && self.seg.unlink().is_err() {
            // This process may not remove the segment (another user's, in the sticky /dev/shm):
            // leave it as one nobody holds, which the next `open` removes or initialises again.
            let _ = self.header().attach.compare_exchange(ATTACH_DEAD, 0, SeqCst, SeqCst);
        }
    }
}

impl Shared {
    fn header(&self) -> &Header {
        // SAFETY: the header page is mapped for the life of `seg`.
        unsafe { &*self.header }
    }
}

/// The driving end of a channel.
pub struct Channel {
    shared: Arc<Shared>,
    tx: Producer,
    rx: Consumer,
    asm: Reassembler,
    queue: SendQueue,
    opts: ChannelOptions,
    my_gen: u32,
    /// Generation of the peer whose records are being read (from its welcome or HELLO).
    rx_gen: u32,
    /// The incoming ring's producer welcomed us: we read it.
    rx_open: bool,
    /// Start of a chunked message being reassembled that is held back in the ring (not handed
    /// out) until it is whole, so that it is never released in part.
    hold_from: Option<u64>,
    peer: Peer,
    /// What arrived while a blocking request waited, for the next poll.
    pending: Batch,
    /// This side's event-loop bell, and the write end of the peer's.
    own_loop_bell: Option<OwnBell>,
    peer_loop_bell: PeerBell,
    /// A publish rang the peer since the last [`Channel::spin`]: it slept, and what it sends next
    /// comes after its wake-up.
    woke_peer: bool,
    closed: bool,
    /// Pid of a process that held a side of this name when this one opened it, that was taken
    /// for dead because its pid is not visible from here (see [`Channel::took_over_unseen`]).
    unseen_holder: Option<String>,
}

impl Channel {
    /// Which side of the segment this is (0 or 1).
    pub fn side(&self) -> usize {
        self.shared.side
    }

    /// This side's generation (bumped on every attach to the side).
    pub fn generation(&self) -> u32 {
        self.my_gen
    }

    /// When this side opened the channel, it freed a side whose process it could not see: no
    /// process has its pid here (it exited, or runs in another PID namespace), or the one that
    /// has it started before it (it surely runs in another PID namespace, a container without a
    /// shared one, where it still holds the segment this process replaced). The two never meet
    /// then; this says so, for error messages and diagnostics.
    pub fn took_over_unseen(&self) -> Option<&str> {
        self.unseen_holder.as_deref()
    }

    /// Ring capacity in bytes per direction.
    pub fn capacity(&self) -> usize {
        self.tx.capacity()
    }

    /// Bytes accepted by `send` but not yet in the ring.
    pub fn queued_bytes(&self) -> usize {
        self.queue.bytes()
    }

    /// Bytes written into the ring that the peer has not released (delivered) yet.
    pub fn unreleased_bytes(&self) -> u64 {
        self.tx.write_index().wrapping_sub(self.tx.consumer_index())
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The OS name of the segment.
    pub fn os_id(&self) -> &str {
        self.shared.seg.os_id()
    }

    /// Is the channel open and its header sane (see [`header_check`])? Called before every poll
    /// and send, before anything looks at the peer's slot.
    fn usable(&self) -> Result<(), Error> {
        if self.closed {
            return Err(Error::Closed);
        }
        if let Some(why) = self.shared.wake_failed.get() {
            return Err(Error::Os(format!("the wake-up work of this channel failed: {why}")));
        }
        if self.shared.broken.load(SeqCst) {
            return Err(Error::Protocol(match self.shared.seg.fault() {
                Some(fault) => fault.to_string(),
                None => "the channel was closed after a protocol error from the peer".into(),
            }));
        }
        self.header_sane().map_err(Error::from)
    }

    /// Runs [`header_check::check_now`]; a fault marks the channel unusable and is noted in the
    /// segment.
    fn header_sane(&self) -> Result<(), ProtocolError> {
        let sh = &self.shared;
        header_check::check_now(sh.header(), sh.side, self.my_gen, self.peer_gen_floor()).inspect_err(|e| {
            sh.broken.store(true, SeqCst);
            sh.seg.note_fault(Error::from(e.clone()).to_string());
        })
    }

    /// The newest generation the peer's slot is known to have had, which it may not go back
    /// from: the one whose records are read, or the one last welcomed, whichever is later. (A
    /// newcomer is welcomed as soon as its slot says ready, before it welcomed this side to its
    /// ring: until then nothing of it is read, and its generation is known from its slot alone.)
    fn peer_gen_floor(&self) -> u32 {
        if peer::gen_before(self.rx_gen, self.peer.announced) {
            self.peer.announced
        } else {
            self.rx_gen
        }
    }

    /// Marks the channel unusable after a protocol error from the peer.
    fn broken(&self, e: ProtocolError) -> Error {
        self.shared.broken.store(true, SeqCst);
        e.into()
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.close();
    }
}
