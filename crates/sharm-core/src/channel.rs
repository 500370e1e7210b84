//! A channel: one side of a named segment, with its send queue, its reassembly, and the
//! wake-up thread.
//!
//! Threads: a [`Channel`] is driven by one thread (in Node, the JS thread): it is the only
//! producer of the outgoing ring and the only consumer of the incoming ring. A [`Waker`] runs on a
//! second thread; it never reads or writes records. It only watches (incoming data, space freed
//! for a waiting sender, the peer's slot), sleeps on the side's doorbell when there is nothing to
//! watch, and calls `notify` so that the driving thread calls [`Channel::poll`].
//!
//! Attach protocol (both processes run the same code; there are no roles):
//! 1. Create the segment exclusively; if that works, initialise it and take side 0.
//! 2. Otherwise open it, wait until its creator finished, check magic and versions, reap sides
//!    whose process is dead, and take a free side by a CAS on the `attach` word. No live side at
//!    all means the segment is stale: it is removed and we start over with a fresh one.
//! 3. Taking a side: state ATTACHING, bump the generation, record pid and start time, skip
//!    whatever is left in the incoming ring, queue a HELLO record, state READY, ring the peer.
//!
//! Leaving: state FREE, clear the `attach` bit; the side that clears the last bit also sets
//! DEAD in the same CAS and unlinks the name, so no newcomer can join a segment being removed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::doorbell::Doorbell;
use crate::error::{Error, ProtocolError};
use crate::framing::{chunk_plan, Reassembler, Step};
use crate::layout::*;
use crate::liveness;
use crate::record::{Kind, RecordHeader, FLAG_CONT, FLAG_MORE};
use crate::ring::{Consumer, Producer, RingMem};
use crate::segment::{os_id_for, Created, Segment};

/// How often a sleeping side checks whether its peer is still alive.
pub const LIVENESS_INTERVAL: Duration = Duration::from_millis(100);
/// A notification not answered by a poll within this time is sent again.
const RENOTIFY_AFTER: Duration = Duration::from_millis(500);
/// How long `open` keeps retrying while the segment is being created or removed by others.
const OPEN_PATIENCE: Duration = Duration::from_secs(2);
/// Limits of one `poll` batch.
const BATCH_BYTES: usize = 4 << 20;
const BATCH_MESSAGES: usize = 65_536;

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
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions {
            capacity: 1 << 20,
            max_queue_bytes: 20_000_000,
            max_message_bytes: 256 << 20,
            spin: Duration::from_micros(20),
            mode: 0o600,
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

/// Where a delivered message's bytes are.
#[derive(Debug)]
pub enum Payload {
    /// `len` bytes at `offset` in [`Batch::data`].
    Inline { offset: usize, len: usize },
    /// A reassembled message of its own.
    Owned(Vec<u8>),
}

/// One delivered message.
#[derive(Debug)]
pub struct Delivered {
    pub kind: Kind,
    pub id: u64,
    /// For requests: the low 16 bits of the sender's generation, to be echoed in the answer.
    pub gen: u16,
    pub payload: Payload,
}

/// Changes of the peer seen by one poll, in order: first a disconnect, then a connect.
#[derive(Debug, Default, Clone, Copy)]
pub struct PeerEvents {
    pub disconnected: bool,
    pub connected: bool,
    /// Generation of the peer now attached (valid when `connected`).
    pub generation: u32,
    /// Messages that were in the ring, not confirmed as read, when the peer left.
    pub unconfirmed: u64,
}

/// What one poll delivers.
#[derive(Debug, Default)]
pub struct Batch {
    pub data: Vec<u8>,
    pub messages: Vec<Delivered>,
    pub events: PeerEvents,
    /// More is waiting in the ring (the batch hit its limits).
    pub more: bool,
}

/// Where [`Channel`]'s drain puts whole messages.
trait Sink {
    /// Can it take one more message of up to `len` bytes (a record's payload length)?
    fn has_room(&self, len: usize) -> bool;
    fn put_inline(&mut self, kind: Kind, id: u64, gen: u16, bytes: &[u8]);
    fn put_owned(&mut self, kind: Kind, id: u64, gen: u16, v: Vec<u8>);
}

impl Sink for Batch {
    fn has_room(&self, _len: usize) -> bool {
        self.data.len() < BATCH_BYTES && self.messages.len() < BATCH_MESSAGES
    }
    fn put_inline(&mut self, kind: Kind, id: u64, gen: u16, bytes: &[u8]) {
        let offset = self.data.len();
        self.data.extend_from_slice(bytes);
        let payload = Payload::Inline {
            offset,
            len: bytes.len(),
        };
        self.messages.push(Delivered { kind, id, gen, payload });
    }
    fn put_owned(&mut self, kind: Kind, id: u64, gen: u16, v: Vec<u8>) {
        self.messages.push(Delivered {
            kind,
            id,
            gen,
            payload: Payload::Owned(v),
        });
    }
}

/// Meta length of a message that does not lie in the arena (see [`ArenaSink`]).
pub const LARGE: u32 = u32::MAX;

/// Delivery into memory the caller owns, with no allocation for small messages: four `u32`
/// per message in `meta` (`kind | gen << 16`, id low 32 bits, id high 32 bits, length), payloads
/// back to back in `arena` from `used` on. A payload over `inline_max` bytes goes to `large`
/// instead, and its length reads [`LARGE`].
pub struct ArenaSink<'a> {
    pub meta: &'a mut [u32],
    pub arena: &'a mut [u8],
    pub used: usize,
    pub count: usize,
    pub inline_max: usize,
    pub large: &'a mut VecDeque<Vec<u8>>,
}

impl ArenaSink<'_> {
    fn entry(&mut self, kind: Kind, id: u64, gen: u16, len: u32) {
        let m = &mut self.meta[self.count * 4..self.count * 4 + 4];
        m[0] = kind as u32 | (gen as u32) << 16;
        m[1] = id as u32;
        m[2] = (id >> 32) as u32;
        m[3] = len;
        self.count += 1;
    }
}

impl Sink for ArenaSink<'_> {
    fn has_room(&self, len: usize) -> bool {
        (self.count + 1) * 4 <= self.meta.len() && (len > self.inline_max || self.used + len <= self.arena.len())
    }
    fn put_inline(&mut self, kind: Kind, id: u64, gen: u16, bytes: &[u8]) {
        if bytes.len() > self.inline_max {
            self.put_owned(kind, id, gen, bytes.to_vec());
            return;
        }
        self.arena[self.used..self.used + bytes.len()].copy_from_slice(bytes);
        self.used += bytes.len();
        self.entry(kind, id, gen, bytes.len() as u32);
    }
    fn put_owned(&mut self, kind: Kind, id: u64, gen: u16, v: Vec<u8>) {
        self.large.push_back(v);
        self.entry(kind, id, gen, LARGE);
    }
}

/// What [`Channel::poll_into`] says besides the messages.
#[derive(Debug, Default, Clone, Copy)]
pub struct PollInfo {
    pub events: PeerEvents,
    /// More is waiting: poll again.
    pub more: bool,
}

struct Outgoing {
    kind: Kind,
    id: u64,
    gen: u16,
    sent: usize,
    data: Vec<u8>,
}

/// State shared by the driving thread and the wake-up thread.
struct Shared {
    side: usize,
    own_bell: Doorbell,
    peer_bell: Doorbell,
    rx: RingMem,
    tx: RingMem,
    header: *const Header,
    spin: Duration,
    stop: AtomicBool,
    broken: AtomicBool,
    /// The driving thread has queued bytes waiting for ring space.
    tx_waiting: AtomicBool,
    /// Consumer index of the outgoing ring when the driving thread last flushed.
    last_tx_read: AtomicU64,
    /// A notification is out and the driving thread has not polled since.
    notified: AtomicBool,
    /// The driving thread polls the rings itself (latency mode): the wake-up thread stays parked.
    driving: AtomicBool,
    thread: OnceLock<std::thread::Thread>,
    unlink: AtomicBool,
    seg: Segment,
}

// SAFETY: `header` and the ring views point into `seg`, which lives as long as `Shared`; all
// shared state is accessed through atomics, and the SPSC ends are owned by the driving thread.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Drop for Shared {
    fn drop(&mut self) {
        if *self.unlink.get_mut() {
            self.seg.unlink_on_drop();
        }
    }
}

impl Shared {
    fn header(&self) -> &Header {
        // SAFETY: the header page is mapped for the life of `seg`.
        unsafe { &*self.header }
    }

    fn peer_view(&self) -> (bool, u32) {
        peer_view(self.header(), 1 - self.side)
    }

    fn has_work(&self, last_peer: (bool, u32)) -> bool {
        if self.broken.load(SeqCst) {
            return false;
        }
        let rx = self.rx.control();
        if rx.producer.write.load(SeqCst) != rx.consumer.read.load(SeqCst) {
            return true;
        }
        if self.tx_waiting.load(SeqCst)
            && self.tx.control().consumer.read.load(SeqCst) != self.last_tx_read.load(SeqCst)
        {
            return true;
        }
        self.peer_view() != last_peer
    }
}

/// Reads a slot's (connected, generation) consistently (the generation is read on both sides of
/// the state, as in a seqlock).
fn peer_view(h: &Header, side: usize) -> (bool, u32) {
    let s = &h.slots[side];
    loop {
        let g1 = s.generation.load(SeqCst);
        let st = s.state.load(SeqCst);
        let g2 = s.generation.load(SeqCst);
        if g1 == g2 {
            return (st == SLOT_READY, g1);
        }
    }
}

/// Frees side `side` if the process holding it is dead. Returns `true` if it did.
fn reap_if_dead(h: &Header, side: usize) -> bool {
    let slot = &h.slots[side];
    let pid = slot.pid.load(SeqCst);
    if pid == 0 || liveness::is_alive(pid, slot.start_time.load(SeqCst)) {
        return false;
    }
    if slot.pid.compare_exchange(pid, 0, SeqCst, SeqCst).is_err() {
        return false;
    }
    slot.state.store(SLOT_FREE, SeqCst);
    h.attach.fetch_and(!ATTACH_SIDE[side], SeqCst);
    true
}

enum Claim {
    Side(usize),
    /// Someone else is removing the segment: open again (once the name is gone).
    Retry,
    /// Nobody alive held the segment and we marked it dead: we unlink it, then open again.
    Stale,
}

/// The driving end of a channel.
pub struct Channel {
    shared: Arc<Shared>,
    tx: Producer,
    rx: Consumer,
    asm: Reassembler,
    queue: VecDeque<Outgoing>,
    queued_bytes: usize,
    opts: ChannelOptions,
    my_gen: u32,
    rx_gen: u32,
    peer_connected: bool,
    peer_gen: u32,
    /// The peer slot as the last `refresh_peer` saw it (spin_for_work watches for changes).
    seen_peer: (bool, u32),
    disconnects: u64,
    pending: Batch,
    events: PeerEvents,
    closed: bool,
}

impl Channel {
    /// Opens (creating if needed) the channel `name` and takes a free side.
    pub fn open(name: &str, opts: ChannelOptions) -> Result<Channel, Error> {
        let os_id = os_id_for(name)?;
        if !capacity_is_valid(opts.capacity) {
            return Err(Error::Invalid(format!(
                "capacity must be a power of two from {MIN_CAPACITY} to {MAX_CAPACITY}, got {}",
                opts.capacity
            )));
        }
        if opts.max_message_bytes == 0 {
            return Err(Error::Invalid("maxMessageBytes must be at least 1".into()));
        }
        let started = Instant::now();
        loop {
            match Segment::create(&os_id, segment_bytes(opts.capacity))? {
                Created::New(mut seg) => {
                    if opts.mode != 0o600 {
                        if let Err(e) = seg.set_mode(opts.mode) {
                            seg.unlink_on_drop();
                            return Err(e);
                        }
                    }
                    return Self::init_new(seg, opts);
                }
                Created::Exists => {}
            }
            if let Some(seg) = Segment::open(&os_id)? {
                if let Some(ch) = Self::join(seg, &opts, started)? {
                    return Ok(ch);
                }
            }
            if started.elapsed() > OPEN_PATIENCE {
                return Err(Error::Os(format!(
                    "could not open channel {name:?}: its segment {os_id} kept being created or removed for {} ms",
                    OPEN_PATIENCE.as_millis()
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn init_new(seg: Segment, opts: ChannelOptions) -> Result<Channel, Error> {
        let base = seg.as_ptr();
        // SAFETY: the segment is at least HEADER_BYTES long and page-aligned; `Header` is all atomics.
        let h = unsafe { &*(base as *const Header) };
        h.creator_pid.store(std::process::id(), SeqCst);
        h.magic.store(MAGIC, SeqCst);
        h.layout_version.store(LAYOUT_VERSION, SeqCst);
        h.protocol_version.store(PROTOCOL_VERSION, SeqCst);
        h.capacity.store(opts.capacity as u64, SeqCst);
        for side in 0..2 {
            // SAFETY: the doorbell areas lie inside the header page; nobody else uses them before
            // init_state is READY.
            unsafe { Doorbell::init(base.add(doorbell_offset(side)))? };
        }
        h.attach.store(ATTACH_SIDE[0], SeqCst);
        let ch = Self::attach_side(seg, 0, opts.capacity, opts)?;
        h.init_state.store(INIT_READY, SeqCst);
        Ok(ch)
    }

    /// Joins an existing segment; `Ok(None)` means "try again from the start".
    fn join(mut seg: Segment, opts: &ChannelOptions, started: Instant) -> Result<Option<Channel>, Error> {
        let os_id = seg.os_id().to_string();
        if seg.len() < HEADER_BYTES {
            if started.elapsed() > OPEN_PATIENCE {
                return Err(Error::Protocol(format!(
                    "shared memory {os_id} is {} bytes, too small to be a sharmipc segment (at least {HEADER_BYTES})",
                    seg.len()
                )));
            }
            return Ok(None);
        }
        // SAFETY: as in init_new; the length was checked.
        let h = unsafe { &*(seg.as_ptr() as *const Header) };
        while h.init_state.load(SeqCst) != INIT_READY {
            let magic = h.magic.load(SeqCst);
            if magic != 0 && magic != MAGIC {
                return Err(bad_magic(&os_id, magic));
            }
            let state = h.init_state.load(SeqCst);
            if state == INIT_ABANDONED {
                return Ok(None); // another opener is removing it
            }
            let creator = h.creator_pid.load(SeqCst);
            if creator != 0
                && !liveness::is_alive(creator, 0)
                && h.init_state
                    .compare_exchange(state, INIT_ABANDONED, SeqCst, SeqCst)
                    .is_ok()
            {
                // The creator died half-way: remove the remains (only the one who marked them
                // abandoned does) and start over.
                seg.unlink_on_drop();
                return Ok(None);
            }
            if started.elapsed() > OPEN_PATIENCE {
                return Err(Error::Protocol(format!(
                    "shared memory {os_id} was never initialised (init state {:#x}, magic {magic:#x})",
                    h.init_state.load(SeqCst)
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let magic = h.magic.load(SeqCst);
        if magic != MAGIC {
            return Err(bad_magic(&os_id, magic));
        }
        let (lv, pv) = (h.layout_version.load(SeqCst), h.protocol_version.load(SeqCst));
        if lv != LAYOUT_VERSION || pv != PROTOCOL_VERSION {
            return Err(Error::Protocol(format!(
                "channel segment {os_id} has layout version {lv} and protocol version {pv}; this sharmipc speaks layout {LAYOUT_VERSION} and protocol {PROTOCOL_VERSION}"
            )));
        }
        let cap = h.capacity.load(SeqCst);
        if cap > usize::MAX as u64 || !capacity_is_valid(cap as usize) || seg.len() < segment_bytes(cap as usize) {
            return Err(Error::Protocol(format!(
                "channel segment {os_id} claims a ring capacity of {cap} bytes but is {} bytes long",
                seg.len()
            )));
        }
        match Self::claim(h)? {
            Claim::Side(side) => Self::attach_side(seg, side, cap as usize, opts.clone()).map(Some),
            Claim::Retry => Ok(None),
            Claim::Stale => {
                // Only the process whose CAS marked it dead removes the name, so a newer
                // segment under the same name can never be removed by a latecomer.
                seg.unlink_on_drop();
                Ok(None)
            }
        }
    }

    fn claim(h: &Header) -> Result<Claim, Error> {
        reap_if_dead(h, 0);
        reap_if_dead(h, 1);
        loop {
            let a = h.attach.load(SeqCst);
            if a & ATTACH_DEAD != 0 {
                return Ok(Claim::Retry);
            }
            if a == 0 {
                // Nobody alive holds it: a stale segment. Mark it dead; the caller unlinks it.
                if h.attach.compare_exchange(0, ATTACH_DEAD, SeqCst, SeqCst).is_ok() {
                    return Ok(Claim::Stale);
                }
                continue;
            }
            let Some(side) = (0..2).find(|&s| a & ATTACH_SIDE[s] == 0) else {
                if reap_if_dead(h, 0) | reap_if_dead(h, 1) {
                    continue;
                }
                let pids = [h.slots[0].pid.load(SeqCst), h.slots[1].pid.load(SeqCst)];
                return Err(Error::Busy(format!(
                    "channel is busy: both sides are held by live processes (pids {} and {})",
                    pids[0], pids[1]
                )));
            };
            if h.attach
                .compare_exchange(a, a | ATTACH_SIDE[side], SeqCst, SeqCst)
                .is_ok()
            {
                return Ok(Claim::Side(side));
            }
        }
    }

    fn attach_side(seg: Segment, side: usize, cap: usize, opts: ChannelOptions) -> Result<Channel, Error> {
        let base = seg.as_ptr();
        // SAFETY: the segment is segment_bytes(cap) long (checked by the caller or created so);
        // ring offsets are multiples of 128 from a page-aligned base.
        let (tx_mem, rx_mem) = unsafe {
            (
                RingMem::new(base.add(ring_offset(side, cap)), cap),
                RingMem::new(base.add(ring_offset(1 - side, cap)), cap),
            )
        };
        // SAFETY: the doorbells were initialised by the creator before init_state became READY.
        let (own_bell, peer_bell) = unsafe {
            (
                Doorbell::attach(base.add(doorbell_offset(side)))?,
                Doorbell::attach(base.add(doorbell_offset(1 - side)))?,
            )
        };
        let h = base as *const Header;
        // SAFETY: header page is mapped.
        let hr = unsafe { &*h };
        let slot = &hr.slots[side];
        slot.state.store(SLOT_ATTACHING, SeqCst);
        let mut gen = slot.generation.fetch_add(1, SeqCst).wrapping_add(1);
        if gen == 0 {
            gen = slot.generation.fetch_add(1, SeqCst).wrapping_add(1);
        }
        let (pid, start) = liveness::current();
        slot.start_time.store(start, SeqCst);
        slot.pid.store(pid, SeqCst);
        // The peer's HELLO may be in the backlog we are about to skip: its generation is also in
        // its slot, bumped before that HELLO was written. Read it first, so that requests of a
        // process that attaches after this point are never labelled with an older generation; a
        // later HELLO overrides it.
        let rx_gen = hr.slots[1 - side].generation.load(SeqCst);
        let rx = Consumer::new(rx_mem, true);
        tx_mem.control().producer.writer_waiting.store(0, SeqCst);
        let tx = Producer::new(tx_mem);
        let last_tx_read = tx.consumer_index();
        let shared = Arc::new(Shared {
            side,
            own_bell,
            peer_bell,
            rx: rx_mem,
            tx: tx_mem,
            header: h,
            spin: opts.spin,
            stop: AtomicBool::new(false),
            broken: AtomicBool::new(false),
            tx_waiting: AtomicBool::new(false),
            last_tx_read: AtomicU64::new(last_tx_read),
            notified: AtomicBool::new(false),
            driving: AtomicBool::new(false),
            thread: OnceLock::new(),
            unlink: AtomicBool::new(false),
            seg,
        });
        let mut ch = Channel {
            shared,
            tx,
            rx,
            asm: Reassembler::new(opts.max_message_bytes),
            queue: VecDeque::new(),
            queued_bytes: 0,
            opts,
            my_gen: gen,
            rx_gen,
            peer_connected: false,
            peer_gen: 0,
            seen_peer: (false, u32::MAX),
            disconnects: 0,
            pending: Batch::default(),
            events: PeerEvents::default(),
            closed: false,
        };
        ch.queue.push_back(Outgoing {
            kind: Kind::Hello,
            id: gen as u64,
            gen: 0,
            sent: 0,
            data: Vec::new(),
        });
        ch.flush()?;
        slot.state.store(SLOT_READY, SeqCst);
        ch.shared.peer_bell.ring();
        ch.refresh_peer();
        ch.flush()?;
        Ok(ch)
    }

    fn header(&self) -> &Header {
        self.shared.header()
    }

    /// Which side of the segment this is (0 or 1).
    pub fn side(&self) -> usize {
        self.shared.side
    }

    /// This side's generation (bumped on every attach to the side).
    pub fn generation(&self) -> u32 {
        self.my_gen
    }

    /// Ring capacity in bytes per direction.
    pub fn capacity(&self) -> usize {
        self.tx.mem().capacity()
    }

    /// Is a peer attached (as of the last poll)?
    pub fn peer_connected(&self) -> bool {
        self.peer_connected
    }

    /// Bytes accepted by `send` but not yet in the ring.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The OS name of the segment.
    pub fn os_id(&self) -> &str {
        self.shared.seg.os_id()
    }

    fn usable(&self) -> Result<(), Error> {
        if self.closed {
            return Err(Error::Closed);
        }
        if self.shared.broken.load(SeqCst) {
            return Err(Error::Protocol(
                "the channel was closed after a protocol error from the peer".into(),
            ));
        }
        Ok(())
    }

    fn broken(&self, e: ProtocolError) -> Error {
        self.shared.broken.store(true, SeqCst);
        e.into()
    }

    /// Sends a message. `gen` is the generation to echo for answers (see [`Delivered::gen`]),
    /// 0 otherwise.
    pub fn send(&mut self, kind: Kind, id: u64, gen: u16, data: &[u8]) -> Result<SendOutcome, Error> {
        self.usable()?;
        // A peer replaced since the last poll must not get the rest of a message begun for its
        // predecessor (it would skip those chunks): look at its slot first.
        self.refresh_peer();
        let r = self.send_one(kind, id, gen, data, true)?;
        self.publish();
        if r == SendOutcome::Queued && self.peer_connected {
            self.flush()?;
        }
        Ok(r)
    }

    /// Sends a batch of messages encoded back to back, each as a 16-byte header (payload
    /// length, `kind | gen << 16`, id low and high 32 bits; `u32` little-endian) and the payload,
    /// padded to 8 bytes. All are accepted whatever the queue holds (the caller applied the
    /// queue limit when it accepted them); the ring is published once, at the end.
    ///
    /// Records that need no chunking are already in ring format: while nothing waits in the
    /// queue they are copied to the ring in runs, and what does not fit is queued as one block.
    pub fn send_batch(&mut self, records: &[u8]) -> Result<(), Error> {
        self.usable()?;
        self.refresh_peer();
        let max = self.plain_max();
        let mut off = 0;
        let mut queued = false;
        let result = loop {
            if self.queue.is_empty() && self.peer_connected {
                match push_runs(&mut self.tx, &records[off..], max) {
                    Ok((n, _)) => off += n,
                    Err(e) => break Err(self.broken(e)),
                }
            }
            if off == records.len() {
                break Ok(());
            }
            let (kind, gen, id, len) = match staged_header(records, off) {
                Ok(h) => h,
                Err(e) => break Err(e),
            };
            let end = plain_run(records, off, max);
            if end > off && !(self.queue.is_empty() && self.peer_connected) {
                // Plain records behind others (or with no peer yet): one queued block.
                let bytes = block_payload(&records[off..end]);
                self.queued_bytes += bytes;
                self.queue.push_back(Outgoing {
                    kind: Kind::Pad,
                    id: 0,
                    gen: 0,
                    sent: 0,
                    data: records[off..end].to_vec(),
                });
                queued = true;
                off = end;
                continue;
            }
            let body = off + STAGED_HEADER;
            match self.send_one(kind, id, gen, &records[body..body + len], false) {
                Ok(r) => queued |= r == SendOutcome::Queued,
                Err(e) => break Err(e),
            }
            off = ((body + len + 7) & !7).min(records.len());
        };
        self.publish();
        if queued && self.peer_connected {
            self.flush()?;
        }
        result
    }

    /// Largest payload of a record that goes to the ring as it is.
    fn plain_max(&self) -> usize {
        self.tx.mem().max_record_payload().min(self.opts.max_message_bytes)
    }

    /// Writes one message into the ring, or what does not fit into the queue; publishes nothing.
    fn send_one(&mut self, kind: Kind, id: u64, gen: u16, data: &[u8], limit: bool) -> Result<SendOutcome, Error> {
        assert!(matches!(
            kind,
            Kind::Request | Kind::Response | Kind::ErrorResponse | Kind::Message | Kind::Stream
        ));
        if data.len() > self.opts.max_message_bytes {
            return Err(Error::TooLarge {
                len: data.len(),
                max: self.opts.max_message_bytes,
            });
        }
        if self.queue.is_empty() && self.peer_connected {
            let mut sent = 0;
            let done = self
                .write_chunks(kind, id, gen, data, &mut sent)
                .map_err(|e| self.broken(e))?;
            if done {
                return Ok(SendOutcome::Written);
            }
            self.enqueue(kind, id, gen, data, sent);
            return Ok(SendOutcome::Queued);
        }
        if limit && self.queued_bytes > 0 && self.queued_bytes + data.len() > self.opts.max_queue_bytes {
            return Err(Error::QueueFull {
                queued: self.queued_bytes,
                limit: self.opts.max_queue_bytes,
            });
        }
        self.enqueue(kind, id, gen, data, 0);
        Ok(SendOutcome::Queued)
    }

    fn enqueue(&mut self, kind: Kind, id: u64, gen: u16, data: &[u8], sent: usize) {
        self.queued_bytes += data.len() - sent;
        self.queue.push_back(Outgoing {
            kind,
            id,
            gen,
            sent,
            data: data.to_vec(),
        });
    }

    /// Writes as many records of a message as fit. Returns `true` when the message is complete.
    fn write_chunks(
        &mut self,
        kind: Kind,
        id: u64,
        gen: u16,
        data: &[u8],
        sent: &mut usize,
    ) -> Result<bool, ProtocolError> {
        let max = self.tx.mem().max_record_payload();
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
            if !self.tx.try_push(hdr, prefix_bytes, &data[range.clone()])? {
                return Ok(false);
            }
            *sent = range.end;
            if flags & FLAG_MORE == 0 {
                return Ok(true);
            }
        }
    }

    fn publish(&mut self) {
        if self.tx.has_unpublished() && self.tx.publish() {
            self.shared.peer_bell.ring();
        }
    }

    /// Moves queued messages into the ring while it has room.
    fn flush(&mut self) -> Result<(), Error> {
        loop {
            while let Some(mut item) = self.queue.pop_front() {
                if item.kind != Kind::Hello && !self.peer_connected {
                    self.queue.push_front(item);
                    break;
                }
                if item.kind == Kind::Pad {
                    // A block of plain records.
                    let max = self.plain_max();
                    let r = push_runs(&mut self.tx, &item.data[item.sent..], max);
                    match r {
                        Ok((n, payload)) => {
                            item.sent += n;
                            self.queued_bytes -= payload;
                            if item.sent < item.data.len() {
                                self.queue.push_front(item);
                                break;
                            }
                            continue;
                        }
                        Err(e) => {
                            self.queue.push_front(item);
                            return Err(self.broken(e));
                        }
                    }
                }
                let before = item.sent;
                let data = std::mem::take(&mut item.data);
                let r = self.write_chunks(item.kind, item.id, item.gen, &data, &mut item.sent);
                item.data = data;
                self.queued_bytes -= item.sent - before;
                match r {
                    Ok(true) => continue,
                    Ok(false) => {
                        self.queue.push_front(item);
                        break;
                    }
                    Err(e) => {
                        self.queue.push_front(item);
                        return Err(self.broken(e));
                    }
                }
            }
            self.publish();
            let waiting = self.peer_connected && !self.queue.is_empty();
            self.shared.last_tx_read.store(self.tx.consumer_index(), SeqCst);
            self.shared.tx_waiting.store(waiting, SeqCst);
            if !waiting {
                return Ok(());
            }
            // Ask the reader to ring us when it frees space, then look once more: it may have
            // freed space before it could see the flag.
            self.tx.mem().control().producer.writer_waiting.store(1, SeqCst);
            let head = self.queue.front().unwrap();
            let next_len = if head.kind == Kind::Pad {
                u32::from_le_bytes(head.data[head.sent..head.sent + 4].try_into().unwrap()) as usize
            } else {
                head.data.len().saturating_sub(head.sent)
            }
            .min(self.tx.mem().max_record_payload())
                + 8;
            if !self.tx.fits(next_len).map_err(|e| self.broken(e))? {
                return Ok(());
            }
        }
    }

    /// Looks at the peer's slot and records connect/disconnect events.
    fn refresh_peer(&mut self) {
        let (connected, gen) = self.shared.peer_view();
        self.seen_peer = (connected, gen);
        if self.peer_connected && (!connected || gen != self.peer_gen) {
            self.peer_connected = false;
            self.disconnects += 1;
            self.events.disconnected = true;
            self.events.unconfirmed += self.count_unconfirmed();
            // Answers and requests were meant for the process that left: drop them. Messages
            // wait for the next peer; one that was partly written starts over.
            self.queue.retain_mut(|o| {
                if o.kind == Kind::Pad {
                    // A block: what was written is gone; of the rest, only messages stay.
                    o.data = keep_messages(&o.data[o.sent..]);
                    o.sent = 0;
                    return !o.data.is_empty();
                }
                o.sent = 0;
                o.kind == Kind::Message || o.kind == Kind::Hello
            });
            self.queued_bytes = self
                .queue
                .iter()
                .map(|o| {
                    if o.kind == Kind::Pad {
                        block_payload(&o.data)
                    } else {
                        o.data.len()
                    }
                })
                .sum();
        }
        if connected && !self.peer_connected {
            self.peer_connected = true;
            self.peer_gen = gen;
            self.events.connected = true;
            self.events.generation = gen;
        }
    }

    /// Messages we wrote that the peer has not released: walks our own ring from its index.
    fn count_unconfirmed(&self) -> u64 {
        let mut walker = Consumer::observer(*self.tx.mem());
        let mut n = 0;
        while let Ok(Some(p)) = walker.peek() {
            if p.header.kind == Kind::Message && p.header.flags & FLAG_CONT == 0 {
                n += 1;
            }
            walker.consume(&p);
        }
        n
    }

    /// Reads records into `sink` until it is full or the batch limits are reached. With `want`,
    /// stops at the answer to request `want` and returns it instead of passing it on.
    fn drain(&mut self, want: Option<u64>, sink: &mut dyn Sink) -> Result<Option<(Kind, Vec<u8>)>, ProtocolError> {
        let release_every = self.rx.mem().capacity() as u64 / 4;
        let mut last_release = self.rx.read_index();
        let mut answer = None;
        let started_at = self.rx.read_index();
        // Limits count bytes delivered and bytes consumed: records that deliver nothing (stale
        // answers, chunks) must not keep this loop, and the JS thread, busy forever.
        while self.rx.read_index().wrapping_sub(started_at) < BATCH_BYTES as u64 {
            let Some(p) = self.rx.peek()? else { break };
            let h = p.header;
            if h.kind == Kind::Hello {
                self.asm.reset();
                self.rx_gen = h.id as u32;
                self.rx.consume(&p);
                continue;
            }
            let is_answer = matches!(h.kind, Kind::Response | Kind::ErrorResponse);
            let stale = is_answer && h.gen != self.my_gen as u16;
            let wanted = is_answer && want == Some(h.id);
            // Requests carry the sender's generation (echoed in answers); stream frames their type.
            let gen = match h.kind {
                Kind::Request => self.rx_gen as u16,
                Kind::Stream => h.gen,
                _ => 0,
            };
            // A record that completes a message needs room in the sink; leave it in the ring
            // when there is none (chunks that only add to a reassembly need none).
            let completes = h.flags & FLAG_MORE == 0;
            if completes && !stale && !wanted && !sink.has_room(p.header.len as usize) {
                break;
            }
            let payload = self.rx.payload(&p);
            match self.asm.push(&h, payload)? {
                Step::Whole(bytes) if !stale => {
                    if wanted {
                        answer = Some((h.kind, bytes.to_vec()));
                    } else {
                        sink.put_inline(h.kind, h.id, gen, bytes);
                    }
                }
                Step::Done(v) if !stale => {
                    if wanted {
                        answer = Some((h.kind, v));
                    } else {
                        sink.put_owned(h.kind, h.id, gen, v);
                    }
                }
                _ => {}
            }
            self.rx.consume(&p);
            if self.rx.read_index().wrapping_sub(last_release) >= release_every {
                last_release = self.rx.read_index();
                if self.rx.release() {
                    self.shared.peer_bell.ring();
                }
            }
            if answer.is_some() {
                break;
            }
        }
        if self.rx.read_index() != last_release && self.rx.release() {
            self.shared.peer_bell.ring();
        }
        Ok(answer)
    }

    /// Takes what arrived: messages, peer events. Also moves queued messages into the ring.
    /// Call it whenever the waker's `notify` fires (and whenever else you like).
    pub fn poll(&mut self) -> Result<Batch, Error> {
        self.polling(Self::poll_inner)
    }

    /// Runs a poll. The wake-up thread waits for one only after it notified, and not at all while
    /// the driving thread polls by itself: it is woken only then (a wake is a system call).
    fn polling<T>(&mut self, poll: impl FnOnce(&mut Self) -> T) -> T {
        let was_notified = self.shared.notified.swap(false, SeqCst);
        let r = poll(self);
        if was_notified && !self.shared.driving.load(SeqCst) {
            if let Some(t) = self.shared.thread.get() {
                t.unpark();
            }
        }
        r
    }

    fn poll_inner(&mut self) -> Result<Batch, Error> {
        self.usable()?;
        self.refresh_peer();
        let mut pending = std::mem::take(&mut self.pending);
        let r = self.drain(None, &mut pending);
        self.pending = pending;
        r.map_err(|e| self.broken(e))?;
        self.flush()?;
        let mut b = std::mem::take(&mut self.pending);
        b.events = std::mem::take(&mut self.events);
        b.more = self.rx.has_data();
        Ok(b)
    }

    /// Like [`Channel::poll`], but delivers into `sink` (see [`ArenaSink`]) until it is full.
    pub fn poll_into(&mut self, sink: &mut ArenaSink) -> Result<PollInfo, Error> {
        self.polling(|ch| ch.poll_into_inner(sink))
    }

    fn poll_into_inner(&mut self, sink: &mut ArenaSink) -> Result<PollInfo, Error> {
        self.usable()?;
        self.refresh_peer();
        // What arrived during a requestSync comes first.
        if !self.pending.messages.is_empty() {
            let mut taken = 0;
            for m in self.pending.messages.iter_mut() {
                let len = match &m.payload {
                    Payload::Inline { len, .. } => *len,
                    Payload::Owned(_) => usize::MAX,
                };
                if !sink.has_room(len) {
                    break;
                }
                match std::mem::replace(&mut m.payload, Payload::Owned(Vec::new())) {
                    Payload::Inline { offset, len } => {
                        sink.put_inline(m.kind, m.id, m.gen, &self.pending.data[offset..offset + len])
                    }
                    Payload::Owned(v) => sink.put_owned(m.kind, m.id, m.gen, v),
                }
                taken += 1;
            }
            self.pending.messages.drain(..taken);
            if self.pending.messages.is_empty() {
                self.pending.data = Vec::new();
            }
        }
        if self.pending.messages.is_empty() {
            self.drain(None, sink).map_err(|e| self.broken(e))?;
        }
        self.flush()?;
        Ok(PollInfo {
            events: std::mem::take(&mut self.events),
            more: !self.pending.messages.is_empty() || self.rx.has_data(),
        })
    }

    /// Removes a request that has not started to go out from the queue. Returns whether it did.
    pub fn cancel(&mut self, id: u64) -> bool {
        for i in 0..self.queue.len() {
            let o = &mut self.queue[i];
            if o.kind == Kind::Request && o.id == id && o.sent == 0 {
                let o = self.queue.remove(i).unwrap();
                self.queued_bytes -= o.data.len();
                return true;
            }
            if o.kind == Kind::Pad {
                let mut off = o.sent;
                while off + STAGED_HEADER <= o.data.len() {
                    let h = &o.data[off..off + STAGED_HEADER];
                    let len = u32::from_le_bytes(h[0..4].try_into().unwrap()) as usize;
                    let size = STAGED_HEADER + ((len + 7) & !7);
                    if h[4] == Kind::Request as u8 && u64::from_le_bytes(h[8..16].try_into().unwrap()) == id {
                        o.data.drain(off..(off + size).min(o.data.len()));
                        self.queued_bytes -= len;
                        return true;
                    }
                    off += size;
                }
            }
        }
        false
    }

    /// Sends request `id` and blocks the calling thread until its answer arrives, the peer
    /// leaves, or `timeout` passes. Everything else that arrives meanwhile is kept for the next
    /// `poll`. The peer's requests are not answered while this blocks: two sides that call this
    /// at each other at once both time out.
    pub fn request_sync(&mut self, id: u64, data: &[u8], timeout: Duration) -> Result<Vec<u8>, Error> {
        self.send(Kind::Request, id, 0, data)?;
        let deadline = Instant::now() + timeout;
        let disconnects = self.disconnects;
        let mut idle_rounds = 0u32;
        loop {
            self.refresh_peer();
            if self.disconnects != disconnects {
                self.cancel(id);
                return Err(Error::PeerGone);
            }
            let before = self.rx.read_index();
            let mut pending = std::mem::take(&mut self.pending);
            let r = self.drain(Some(id), &mut pending);
            self.pending = pending;
            match r.map_err(|e| self.broken(e))? {
                Some((Kind::Response, v)) => return Ok(v),
                Some((_, v)) => return Err(Error::Remote(String::from_utf8_lossy(&v).into_owned())),
                None => {}
            }
            self.flush()?;
            let now = Instant::now();
            if now >= deadline {
                self.cancel(id);
                return Err(Error::Timeout(timeout.as_millis().min(u32::MAX as u128) as u32));
            }
            if self.rx.read_index() != before {
                idle_rounds = 0;
                continue;
            }
            // Nothing arrived: spin a little, then yield, then nap (capped at 1 ms). The
            // doorbell belongs to the wake-up thread, so this thread does not sleep on it.
            idle_rounds += 1;
            if idle_rounds < 200 {
                std::hint::spin_loop();
            } else if idle_rounds < 400 {
                std::thread::yield_now();
            } else {
                let nap = Duration::from_micros(((idle_rounds - 400) as u64 * 10).min(1000));
                std::thread::sleep(nap.min(deadline.saturating_duration_since(now)));
            }
        }
    }

    /// Says whether the driving thread polls by itself (see [`Channel::spin_for_work`]). While it
    /// does, the wake-up thread does not spin or notify, so the two do not compete for a core;
    /// when it stops, the wake-up thread takes over at once.
    pub fn set_driving(&self, on: bool) {
        let sh = &self.shared;
        if sh.driving.swap(on, SeqCst) != on {
            if let Some(t) = sh.thread.get() {
                t.unpark();
            }
            if !on {
                sh.own_bell.ring();
            }
        }
    }

    /// Busy-waits up to `limit` on the calling (driving) thread for something for `poll` to do:
    /// records in the incoming ring, ring space for queued messages, or a change of the peer.
    /// Returns whether there is. No system call while it waits.
    pub fn spin_for_work(&self, limit: Duration) -> bool {
        let sh = &*self.shared;
        let last_peer = self.seen_peer;
        let start = Instant::now();
        loop {
            if sh.has_work(last_peer) {
                return true;
            }
            for _ in 0..16 {
                std::hint::spin_loop();
            }
            if start.elapsed() >= limit {
                return sh.has_work(last_peer);
            }
        }
    }

    /// A handle for the wake-up thread.
    pub fn waker(&self) -> Waker {
        Waker {
            shared: self.shared.clone(),
        }
    }

    /// Leaves the channel: stops the wake-up thread (it exits within its next wake), frees this
    /// side, and removes the segment if the peer is gone too. Queued messages are dropped: flush
    /// them first (see `queued_bytes`) if they matter. Idempotent.
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let sh = &self.shared;
        sh.stop.store(true, SeqCst);
        sh.own_bell.ring();
        if let Some(t) = sh.thread.get() {
            t.unpark();
        }
        let h = self.header();
        let side = sh.side;
        h.slots[side].state.store(SLOT_FREE, SeqCst);
        h.slots[side].pid.store(0, SeqCst);
        reap_if_dead(h, 1 - side);
        let mut a = h.attach.load(SeqCst);
        loop {
            let mut next = a & !ATTACH_SIDE[side];
            if next & (ATTACH_SIDE[0] | ATTACH_SIDE[1]) == 0 {
                next |= ATTACH_DEAD;
            }
            match h.attach.compare_exchange(a, next, SeqCst, SeqCst) {
                Ok(_) => {
                    if next & ATTACH_DEAD != 0 {
                        sh.unlink.store(true, SeqCst);
                    }
                    break;
                }
                Err(now) => a = now,
            }
        }
        sh.peer_bell.ring();
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.close();
    }
}

/// Bytes of the header of each message in [`Channel::send_batch`]'s input.
pub const STAGED_HEADER: usize = 16;

/// Kind, generation, id and payload length of the message encoded at `off`, checked.
fn staged_header(records: &[u8], off: usize) -> Result<(Kind, u16, u64, usize), Error> {
    let Some(h) = records.get(off..off + STAGED_HEADER) else {
        return Err(bad_batch(format!(
            "{} bytes left at offset {off}, less than a header",
            records.len() - off
        )));
    };
    let word = |at: usize| u32::from_le_bytes(h[at..at + 4].try_into().unwrap());
    let len = word(0) as usize;
    let kind = Kind::from_u8(h[4]).filter(|k| {
        matches!(
            k,
            Kind::Request | Kind::Response | Kind::ErrorResponse | Kind::Message | Kind::Stream
        )
    });
    let Some(kind) = kind else {
        return Err(bad_batch(format!("kind {} at offset {off}", h[4])));
    };
    if h[5] != 0 {
        return Err(bad_batch(format!("flags {} at offset {off}", h[5])));
    }
    if records.len() - off - STAGED_HEADER < len {
        return Err(bad_batch(format!("length {len} at offset {off} runs past the end")));
    }
    Ok((
        kind,
        u16::from_le_bytes([h[6], h[7]]),
        word(8) as u64 | (word(12) as u64) << 32,
        len,
    ))
}

/// Size of the record at `at` if it can go to the ring as it is: a known kind, no flags, a
/// payload of at most `max` bytes, wholly inside `records`.
fn plain(records: &[u8], at: usize, max: usize) -> Option<usize> {
    let h = records.get(at..at + STAGED_HEADER)?;
    let len = u32::from_le_bytes(h[0..4].try_into().unwrap()) as usize;
    let size = STAGED_HEADER + ((len + 7) & !7);
    let known = matches!(h[4], 1..=4 | 7) && h[5] == 0;
    (known && len <= max && records.len() - at >= size).then_some(size)
}

/// End of the run of plain records starting at `off`.
fn plain_run(records: &[u8], mut off: usize, max: usize) -> usize {
    while let Some(size) = plain(records, off, max) {
        off += size;
    }
    off
}

/// Payload bytes of the (plain) records in `block`.
fn block_payload(block: &[u8]) -> usize {
    let mut off = 0;
    let mut n = 0;
    while off + STAGED_HEADER <= block.len() {
        let len = u32::from_le_bytes(block[off..off + 4].try_into().unwrap()) as usize;
        n += len;
        off += STAGED_HEADER + ((len + 7) & !7);
    }
    n
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
        while let Some(size) = plain(records, end, max) {
            if end - off + size > room {
                next = Some(size);
                break;
            }
            payload += u32::from_le_bytes(records[end..end + 4].try_into().unwrap()) as usize;
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

/// Keeps only the send-and-forget records of a queued block.
fn keep_messages(block: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + STAGED_HEADER <= block.len() {
        let len = u32::from_le_bytes(block[off..off + 4].try_into().unwrap()) as usize;
        let size = (STAGED_HEADER + ((len + 7) & !7)).min(block.len() - off);
        if block[off + 4] == Kind::Message as u8 {
            out.extend_from_slice(&block[off..off + size]);
        }
        off += size;
    }
    out
}

fn bad_batch(what: String) -> Error {
    Error::Invalid(format!("send_batch: bad input: {what}"))
}

fn bad_magic(os_id: &str, magic: u64) -> Error {
    Error::Protocol(format!(
        "shared memory {os_id} is not a sharmipc channel: found magic {:?}, expected \"SHARMIPC\"",
        String::from_utf8_lossy(&magic.to_le_bytes())
    ))
}

/// The wake-up thread's handle. [`Waker::run`] returns when the channel closes.
pub struct Waker {
    shared: Arc<Shared>,
}

impl Waker {
    /// Watches the channel and calls `notify` when the driving thread should poll. After a
    /// notification it waits until that poll happened before it notifies again.
    pub fn run(self, notify: impl Fn()) {
        let sh = &*self.shared;
        let _ = sh.thread.set(std::thread::current());
        let mut last_peer = (false, u32::MAX);
        let mut next_check = Instant::now();
        let mut notified_at = Instant::now();
        while !sh.stop.load(SeqCst) {
            let now = Instant::now();
            if now >= next_check {
                reap_if_dead(sh.header(), 1 - sh.side);
                next_check = now + LIVENESS_INTERVAL;
            }
            if sh.driving.load(SeqCst) {
                // The driving thread polls by itself; look only after the peer's liveness.
                std::thread::park_timeout(LIVENESS_INTERVAL);
                continue;
            }
            if sh.notified.load(SeqCst) {
                std::thread::park_timeout(LIVENESS_INTERVAL);
                // The driving thread may be busy for long; if a notification could have been
                // lost, one more costs only an empty poll.
                if sh.notified.load(SeqCst) && notified_at.elapsed() >= RENOTIFY_AFTER {
                    notified_at = Instant::now();
                    notify();
                }
                continue;
            }
            if sh.has_work(last_peer) || self.spin_for_work(last_peer) {
                last_peer = sh.peer_view();
                notified_at = Instant::now();
                sh.notified.store(true, SeqCst);
                notify();
                continue;
            }
            let rx_flag = &sh.rx.control().consumer.reader_asleep;
            let tx_flag = &sh.tx.control().producer.writer_waiting;
            rx_flag.store(1, SeqCst);
            let waiting = sh.tx_waiting.load(SeqCst);
            if waiting {
                tx_flag.store(1, SeqCst);
            }
            if !sh.has_work(last_peer) && !sh.stop.load(SeqCst) {
                sh.own_bell.wait(LIVENESS_INTERVAL);
            }
            rx_flag.store(0, SeqCst);
        }
    }

    fn spin_for_work(&self, last_peer: (bool, u32)) -> bool {
        let sh = &*self.shared;
        let until = Instant::now() + sh.spin;
        while Instant::now() < until {
            for _ in 0..32 {
                std::hint::spin_loop();
            }
            if sh.has_work(last_peer) {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(records: &mut Vec<u8>, kind: Kind, id: u64, data: &[u8]) {
        records.extend_from_slice(&(data.len() as u32).to_le_bytes());
        records.extend_from_slice(&(kind as u32).to_le_bytes());
        records.extend_from_slice(&id.to_le_bytes());
        records.extend_from_slice(data);
        records.resize((records.len() + 7) & !7, 0);
    }

    fn pair(name: &str, capacity: usize) -> (Channel, Channel) {
        let opts = ChannelOptions {
            capacity,
            ..Default::default()
        };
        let a = Channel::open(name, opts.clone()).unwrap();
        let mut b = Channel::open(name, opts).unwrap();
        b.poll().unwrap();
        (a, b)
    }

    /// Payload of message `i`: lengths from 0 past the record limit of a 4 KiB ring (1008), so
    /// runs are interrupted by messages that need chunking.
    fn payload(i: u64) -> Vec<u8> {
        let len = (i * 37 % 1300) as usize;
        (0..len).map(|k| (i as usize + k) as u8).collect()
    }

    #[test]
    fn batches_arrive_whole_and_in_order_through_a_small_ring_with_wraps_and_chunks() {
        let (mut a, mut b) = pair(&format!("batch-test-{}", std::process::id()), 4096);
        a.poll().unwrap();
        let total = 3000u64;
        let mut next_id = 0u64;
        let mut got = 0u64;
        let mut meta = vec![0u32; 4 * 64];
        let mut arena = vec![0u8; 16 * 1024];
        let mut large = VecDeque::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while got < total {
            assert!(Instant::now() < deadline, "only {got} of {total} arrived");
            if next_id < total && a.queued_bytes() < 8192 {
                let mut records = Vec::new();
                for _ in 0..50 {
                    if next_id < total {
                        encode(&mut records, Kind::Message, next_id, &payload(next_id));
                        next_id += 1;
                    }
                }
                a.send_batch(&records).unwrap();
            }
            a.poll().unwrap();
            let mut sink = ArenaSink {
                meta: &mut meta,
                arena: &mut arena,
                used: 0,
                count: 0,
                inline_max: 4096,
                large: &mut large,
            };
            b.poll_into(&mut sink).unwrap();
            let (count, meta_now, arena_now) = (sink.count, sink.meta.to_vec(), sink.arena.to_vec());
            let mut off = 0;
            for m in meta_now.chunks(4).take(count) {
                assert_eq!(m[0] & 0xff, Kind::Message as u32);
                let id = m[1] as u64 | (m[2] as u64) << 32;
                assert_eq!(id, got, "messages in order");
                let data = if m[3] == LARGE {
                    large.pop_front().unwrap()
                } else {
                    off += m[3] as usize;
                    arena_now[off - m[3] as usize..off].to_vec()
                };
                assert_eq!(data, payload(id), "payload of message {id}");
                got += 1;
            }
        }
        assert!(large.is_empty());
    }

    #[test]
    fn queued_blocks_can_lose_a_cancelled_request_and_keep_only_messages_for_a_new_peer() {
        let name = format!("batch-queue-{}", std::process::id());
        let opts = ChannelOptions {
            capacity: 4096,
            ..Default::default()
        };
        let mut a = Channel::open(&name, opts.clone()).unwrap();
        let mut b = Channel::open(&name, opts.clone()).unwrap();
        a.poll().unwrap();
        // The peer does not read: fill the ring until messages queue up.
        while a.queued_bytes() == 0 {
            a.send(Kind::Message, 0, 0, b"fill").unwrap();
        }
        let mut records = Vec::new();
        encode(&mut records, Kind::Message, 0, b"m1");
        encode(&mut records, Kind::Request, 7, b"request");
        encode(&mut records, Kind::Response, 3, b"answer");
        encode(&mut records, Kind::Message, 0, b"m2");
        let before = a.queued_bytes();
        a.send_batch(&records).unwrap();
        assert_eq!(a.queued_bytes() - before, 2 + 7 + 6 + 2, "the batch waits as a block");
        assert!(a.cancel(7));
        assert!(!a.cancel(7));
        assert_eq!(a.queued_bytes() - before, 2 + 6 + 2);
        // The peer leaves: the answer was for it; the messages wait for the next one.
        b.close();
        drop(b);
        a.poll().unwrap();
        let mut c = Channel::open(&name, opts).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        while a.queued_bytes() > 0 || !got.contains(&b"m2".to_vec()) {
            assert!(Instant::now() < deadline, "got {got:?}");
            a.poll().unwrap();
            let batch = c.poll().unwrap();
            for m in &batch.messages {
                assert_eq!(m.kind, Kind::Message);
                if let Payload::Inline { offset, len } = m.payload {
                    got.push(batch.data[offset..offset + len].to_vec());
                }
            }
        }
        got.retain(|p| p != b"fill");
        assert_eq!(got, vec![b"m1".to_vec(), b"m2".to_vec()]);
    }

    #[test]
    fn a_bad_batch_is_refused_with_what_was_wrong() {
        let (mut a, _b) = pair(&format!("batch-bad-{}", std::process::id()), 4096);
        let mut records = Vec::new();
        encode(&mut records, Kind::Message, 1, b"ok");
        records.extend_from_slice(&[3, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let e = a.send_batch(&records).unwrap_err();
        assert!(e.to_string().contains("kind 9 at offset 24"), "{e}");
        let mut short = Vec::new();
        encode(&mut short, Kind::Message, 1, &[1; 40]);
        short.truncate(30);
        let e = a.send_batch(&short).unwrap_err();
        assert!(e.to_string().contains("runs past the end"), "{e}");
    }
}
