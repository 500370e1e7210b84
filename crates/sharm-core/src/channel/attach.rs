//! Attaching to a channel and leaving it: open or create the segment, claim a side, reap sides
//! whose process died, generations. (What this side knows of its peer is in `peer`.)
//!
//! The protocol is described in the [module doc of the channel](super). Everything here runs on
//! the driving thread, except [`reap_if_dead`] and [`Shared::peer_view`], which the wake-up thread
//! also calls: both only use the atomics of the segment header.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::departure::Departure;
use super::peer::{pack_view, Peer};
use super::{Batch, Channel, ChannelOptions, SendQueue, Shared};
use crate::doorbell::Doorbell;
use crate::error::Error;
use crate::framing::Reassembler;
use crate::layout::*;
use crate::liveness;
use crate::loop_bell::{OwnBell, PeerBell};
use crate::record::Kind;
use crate::ring::{Consumer, Producer, RingMem};
use crate::segment::{os_id_for, Created, Opened, Segment};

/// How long `open` keeps retrying while the segment is being created or removed by others.
const OPEN_PATIENCE: Duration = Duration::from_secs(2);
/// How long a segment with a header page may show no creator before an opener takes it over. A
/// creator claims it right after mapping it, so this is a creator that died in between (or
/// memory someone zeroed); taking over a live but slow creator's new segment does no harm, as
/// that creator then joins instead (it writes nothing before its claim).
const UNCLAIMED_PATIENCE: Duration = Duration::from_millis(100);

impl Shared {
    /// The peer's slot: (connected, generation).
    pub(super) fn peer_view(&self) -> (bool, u32) {
        peer_view(self.header(), 1 - self.side)
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
pub(super) fn reap_if_dead(h: &Header, side: usize) -> bool {
    let slot = &h.slots[side];
    reap_if_dead_as(h, side, slot.pid.load(SeqCst), slot.start_time.load(SeqCst))
}

/// Frees side `side` if it still holds `pid` and the process `pid` started at `start` is dead.
/// Returns `true` if it did.
pub(super) fn reap_if_dead_as(h: &Header, side: usize, pid: u32, start: u64) -> bool {
    let slot = &h.slots[side];
    if pid == 0 || liveness::is_alive(pid, start) {
        return false;
    }
    if slot.pid.compare_exchange(pid, 0, SeqCst, SeqCst).is_err() {
        return false;
    }
    slot.state.store(SLOT_FREE, SeqCst);
    h.attach.fetch_and(!ATTACH_SIDE[side], SeqCst);
    true
}

thread_local! {
    /// A side freed by this thread's `open` whose pid is not visible here.
    static UNSEEN_HOLDER: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

enum Claim {
    Side(usize),
    /// Someone else is removing the segment: open again (once the name is gone).
    Retry,
    /// Nobody alive held the segment and we marked it dead: we remove it (or reuse it), then
    /// open again.
    Stale,
}

/// What one look at the segment under a channel's name came to.
enum Joined {
    Channel(Box<Channel>),
    /// This process changed something (removed the segment, or took it over): look again at once.
    Again,
    /// Another process is creating, re-initialising or removing the segment: look again shortly.
    /// Says what is going on, for the error if it never ends.
    Wait(String),
}

/// The fixed part of a segment's header page.
fn header_of(seg: &Segment) -> &Header {
    assert!(
        seg.len() >= HEADER_BYTES,
        "a segment is read only once it has a header page"
    );
    // SAFETY: the mapping is page-aligned and at least HEADER_BYTES long (checked above), and
    // `Header` is all atomics; the reference lives no longer than the mapping.
    unsafe { &*(seg.as_ptr() as *const Header) }
}

impl Channel {
    /// Opens (creating if needed) the channel `name` and takes a free side.
    pub fn open(name: &str, opts: ChannelOptions) -> Result<Channel, Error> {
        UNSEEN_HOLDER.with(|u| u.replace(None));
        let mut ch = Self::open_once(name, opts)?;
        ch.unseen_holder = UNSEEN_HOLDER.with(|u| u.take());
        Ok(ch)
    }

    fn open_once(name: &str, opts: ChannelOptions) -> Result<Channel, Error> {
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
        // Set when this process lengthened a truncated object: nobody is creating that one.
        let mut grown = false;
        loop {
            if let Created::New(mut seg) = Segment::create(&os_id, segment_bytes(opts.capacity))? {
                // Claim the creation: an opener that found the new object unclaimed for too long
                // may have taken it over (see `join`); then it is theirs, and we join it.
                let me = std::process::id();
                if header_of(&seg)
                    .creator_pid
                    .compare_exchange(0, me, SeqCst, SeqCst)
                    .is_ok()
                {
                    if opts.mode != 0o600 {
                        if let Err(e) = seg.set_mode(opts.mode) {
                            return Err(match seg.unlink() {
                                Ok(()) => e,
                                Err(u) => Error::Os(format!("{e}; and {u}")),
                            });
                        }
                    }
                    return Self::init_new(seg, opts);
                }
            }
            let wait = match Segment::open(&os_id)? {
                Opened::Mapped(seg) if seg.len() < HEADER_BYTES => {
                    // A creator sizes its object in one step, from 0 to the whole segment: one
                    // between the two was truncated. Give it its header page back and look again.
                    if let Some(e) = foreign(&seg) {
                        return Err(e);
                    }
                    Segment::grow(&os_id, HEADER_BYTES)?;
                    grown = true;
                    continue;
                }
                Opened::Mapped(seg) => match Self::join(seg, &opts, started, std::mem::take(&mut grown))? {
                    Joined::Channel(ch) => return Ok(*ch),
                    Joined::Again => continue,
                    Joined::Wait(what) => what,
                },
                // Removed meanwhile: create it.
                Opened::Missing => continue,
                Opened::Empty if started.elapsed() > OPEN_PATIENCE => {
                    // Creators size their object right after creating it: this one was truncated
                    // to nothing (or its creator died in between).
                    Segment::grow(&os_id, HEADER_BYTES)?;
                    grown = true;
                    continue;
                }
                Opened::Empty => "empty (0 bytes), not sized by its creator yet".to_string(),
            };
            if started.elapsed() > OPEN_PATIENCE {
                return Err(Error::Os(format!(
                    "could not open channel {name:?}: after {} ms its segment {os_id} is still {wait}",
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

    /// Joins an existing segment of at least a header page.
    ///
    /// Until its `init_state` is READY, a segment belongs to the process in `creator_pid`: its
    /// creator, or one that took it over. An opener takes it over, by a CAS on `creator_pid`,
    /// when that process is dead, or when there is none (0: only a creator between mapping the
    /// object and its claim can be so, and only briefly) and the object was truncated or stays
    /// so for [`UNCLAIMED_PATIENCE`].
    fn join(seg: Segment, opts: &ChannelOptions, started: Instant, grown: bool) -> Result<Joined, Error> {
        let h = header_of(&seg);
        let since = Instant::now();
        while h.init_state.load(SeqCst) != INIT_READY {
            let magic = h.magic.load(SeqCst);
            if magic != 0 && magic != MAGIC {
                return Err(bad_magic(&seg.path(), magic));
            }
            let state = h.init_state.load(SeqCst);
            let holder = h.creator_pid.load(SeqCst);
            let gone = match holder {
                0 => grown || since.elapsed() > UNCLAIMED_PATIENCE,
                pid => !liveness::is_alive(pid, 0),
            };
            if gone
                && h.creator_pid
                    .compare_exchange(holder, std::process::id(), SeqCst, SeqCst)
                    .is_ok()
            {
                // Ours now. Whoever waits on this object looks again (it may be removed).
                h.init_state.store(INIT_ABANDONED, SeqCst);
                return Self::remove_or_reuse(seg, opts);
            }
            if state == INIT_ABANDONED {
                return Ok(Joined::Wait(format!(
                    "being removed or re-initialised by process {holder}"
                )));
            }
            if started.elapsed() > OPEN_PATIENCE {
                return Ok(Joined::Wait(format!(
                    "being initialised by process {holder} (init state {state:#x})"
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let magic = h.magic.load(SeqCst);
        if magic != MAGIC {
            return Err(bad_magic(&seg.path(), magic));
        }
        let (lv, pv) = (h.layout_version.load(SeqCst), h.protocol_version.load(SeqCst));
        if lv != LAYOUT_VERSION || pv != PROTOCOL_VERSION {
            return Err(Error::Protocol(format!(
                "channel segment {} has layout version {lv} and protocol version {pv}; this sharmipc speaks layout {LAYOUT_VERSION} and protocol {PROTOCOL_VERSION}",
                seg.os_id()
            )));
        }
        let cap = h.capacity.load(SeqCst);
        if cap > usize::MAX as u64 || !capacity_is_valid(cap as usize) {
            return Err(Error::Protocol(format!(
                "channel segment {} claims a ring capacity of {cap} bytes, which is not a power of two from {MIN_CAPACITY} to {MAX_CAPACITY}",
                seg.os_id()
            )));
        }
        let cap = cap as usize;
        if seg.len() < segment_bytes(cap) {
            return Self::reclaim_short(seg, opts, cap);
        }
        match Self::claim(h)? {
            Claim::Side(side) => {
                Self::attach_side(seg, side, cap, opts.clone()).map(|ch| Joined::Channel(Box::new(ch)))
            }
            Claim::Retry => Ok(Joined::Wait(
                "being removed by the last process that left it".to_string(),
            )),
            Claim::Stale => Self::remove_or_reuse(seg, opts),
        }
    }

    fn claim(h: &Header) -> Result<Claim, Error> {
        for side in 0..2 {
            let slot = &h.slots[side];
            let (pid, start) = (slot.pid.load(SeqCst), slot.start_time.load(SeqCst));
            let unseen = crate::inspect::unseen(pid, start);
            if reap_if_dead(h, side) {
                if let Some(certain) = unseen {
                    let what = crate::inspect::describe_unseen(side, pid, certain);
                    UNSEEN_HOLDER.with(|u| u.replace(Some(what)));
                }
            }
        }
        loop {
            let a = h.attach.load(SeqCst);
            if !super::header_check::attach_word_is_valid(a) {
                // Scribbled on. The segment is free for the taking once no live process holds a
                // side (the dead were reaped above).
                let holders = holders(h);
                if !holders.is_empty() {
                    return Err(Error::Protocol(format!(
                        "corrupt channel header in shared memory: the attach word {a:#x} is none the protocol writes, and process {holders} holds a side"
                    )));
                }
                if h.attach.compare_exchange(a, ATTACH_DEAD, SeqCst, SeqCst).is_ok() {
                    return Ok(Claim::Stale);
                }
                continue;
            }
            if a & ATTACH_DEAD != 0 {
                return Ok(Claim::Retry);
            }
            if a == 0 {
                // Nobody alive holds it: a stale segment. Mark it dead; the caller removes it.
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
        // ring offsets are multiples of 128 from a page-aligned base. The side claim makes this
        // process the one writer of ring `side` and the one reader of ring `1 - side`, and each
        // RingMem is made once here and becomes that one end; `seg` outlives both ends and their
        // watches (it is kept in `Shared`, which the Channel holds).
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
        // The bell exists before the generation that uses it is seen: the peer opens the bell of
        // each generation of ours once, at its first ring (see `loop_bell`).
        let own_loop_bell = if opts.loop_bell {
            OwnBell::create(seg.os_id(), side, seg.mode().unwrap_or(opts.mode))
        } else {
            None
        };
        let mut gen = slot.generation.fetch_add(1, SeqCst).wrapping_add(1);
        if gen == 0 {
            gen = slot.generation.fetch_add(1, SeqCst).wrapping_add(1);
        }
        let (pid, start) = liveness::current();
        slot.start_time.store(start, SeqCst);
        slot.pid.store(pid, SeqCst);
        // The incoming ring is read only once its producer welcomed us (see `Channel::open_rx`).
        let rx = Consumer::new(rx_mem, false);
        let tx = Producer::new(tx_mem);
        let last_tx_read = tx.consumer_index();
        let shared = Arc::new(Shared {
            side,
            own_bell,
            peer_bell,
            rx: rx.watch(),
            tx: tx.watch(),
            header: h,
            my_gen: gen,
            rx_open: AtomicBool::new(false),
            rx_cursor: AtomicU64::new(0),
            spin: opts.spin,
            stop: AtomicBool::new(false),
            broken: AtomicBool::new(false),
            wake_failed: OnceLock::new(),
            tx_waiting: AtomicBool::new(false),
            last_tx_read: AtomicU64::new(last_tx_read),
            notified: AtomicBool::new(false),
            polled_view: AtomicU64::new(pack_view(Peer::new().seen)),
            join_look: std::sync::Mutex::new(None),
            driving: AtomicBool::new(false),
            loop_mode: AtomicBool::new(false),
            thread: OnceLock::new(),
            unlink: AtomicBool::new(false),
            seg,
        });
        let mut ch = Channel {
            shared,
            tx,
            rx,
            asm: Reassembler::new(opts.max_message_bytes),
            queue: SendQueue::default(),
            opts,
            my_gen: gen,
            rx_gen: 0,
            rx_open: false,
            hold_from: None,
            peer: Peer::new(),
            pending: Batch::default(),
            own_loop_bell,
            peer_loop_bell: PeerBell::default(),
            woke_peer: false,
            closed: false,
            unseen_holder: None,
        };
        ch.queue.push_message(Kind::Hello, gen as u64, 0, &[], 0);
        ch.flush()?;
        slot.state.store(SLOT_READY, SeqCst);
        ch.ring_peer();
        ch.refresh_peer()?;
        ch.flush()?;
        ch.open_rx()?;
        Ok(ch)
    }

    /// Starts reading the incoming ring once its producer welcomed this generation. Returns
    /// whether it started now.
    pub(super) fn open_rx(&mut self) -> Result<bool, Error> {
        if self.rx_open {
            return Ok(false);
        }
        let (consumer, producer, at) = self.rx.welcome();
        if consumer != self.my_gen {
            return Ok(false);
        }
        if self.rx.open_at(at).map_err(|e| self.broken(e))? {
            self.ring_peer();
        }
        self.asm.reset();
        self.rx_gen = producer;
        self.rx_open = true;
        self.shared.rx_cursor.store(at, SeqCst);
        self.shared.rx_open.store(true, SeqCst);
        Ok(true)
    }

    /// Leaves the channel like [`Channel::close`] and says what of ours was not confirmed as
    /// delivered: departures not handed out by a poll yet, what waits in the queue, and, if the
    /// peer is still attached, what it has not released from the ring (in doubt: it may still
    /// read it after we left).
    pub fn leave(&mut self) -> Departure {
        let mut report = Departure::default();
        if self.closed {
            return report;
        }
        if self.usable().is_ok() {
            // A peer that left its slot broken is not accounted for as a departure.
            let _ = self.refresh_peer();
        }
        for ev in self.peer.events.drain(..) {
            if let super::PeerEvent::Left(d) = ev {
                report.absorb(d);
            }
        }
        if let Some(t) = self.peer.tx {
            report.generation = t.gen;
            self.read_back(t.from, false, &mut report);
        }
        self.queue
            .take_for_departure(&mut report.undelivered, &mut report.requests_unsent);
        self.close();
        report
    }

    /// Leaves the channel: stops the wake-up thread (it exits within its next wake), frees this
    /// side, and removes the segment if the peer is gone too. Queued messages are dropped: flush
    /// them first (see `queued_bytes`), or use [`Channel::leave`] to get them back. Idempotent.
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        if let Some(bell) = self.own_loop_bell.take() {
            bell.remove();
        }
        let sh = &self.shared;
        sh.stop.store(true, SeqCst);
        sh.own_bell.ring();
        if let Some(t) = sh.thread.get() {
            t.unpark();
        }
        let h = sh.header();
        let side = sh.side;
        let corrupt = sh.seg.fault().is_some();
        // After a corrupt header, leave the slot so that the peer reports the corruption too.
        h.slots[side]
            .state
            .store(if corrupt { SLOT_BROKEN } else { SLOT_FREE }, SeqCst);
        h.slots[side].pid.store(0, SeqCst);
        // A corrupt header's pids cannot be trusted: a live peer's would be reaped.
        if !corrupt {
            reap_if_dead(h, 1 - side);
        }
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
        self.ring_peer();
        self.peer_loop_bell.close();
    }
}

/// Taking over a segment that nobody alive holds: removing it, or reusing it in place.
impl Channel {
    /// A segment shorter than its capacity says (someone truncated it): whoever maps it dies with
    /// SIGBUS on touching the missing part, so it can only be removed or rebuilt. That is done
    /// when no live process holds it; else the error names them. A side taken with no pid in its
    /// slot counts as free here: only a claim in progress looks so, and none can be in progress
    /// on a segment too short to join.
    fn reclaim_short(seg: Segment, opts: &ChannelOptions, cap: usize) -> Result<Joined, Error> {
        let h = header_of(&seg);
        reap_if_dead(h, 0);
        reap_if_dead(h, 1);
        loop {
            let a = h.attach.load(SeqCst);
            if a == ATTACH_DEAD {
                return Ok(Joined::Wait(
                    "being removed by the last process that left it".to_string(),
                ));
            }
            let holders = holders(h);
            if !holders.is_empty() {
                return Err(Error::Protocol(format!(
                    "shared memory {} is {} bytes, but its ring capacity of {cap} bytes needs {}: it was truncated while process {holders} held it (which dies with SIGBUS when it touches the missing part); open the channel again once it has gone",
                    seg.path(),
                    seg.len(),
                    segment_bytes(cap),
                )));
            }
            if h.attach.compare_exchange(a, ATTACH_DEAD, SeqCst, SeqCst).is_ok() {
                return Self::remove_or_reuse(seg, opts);
            }
        }
    }

    /// For a segment this process holds alone (it set DEAD on a stale one, or took over an
    /// unfinished one): removes it, so that the next look creates it afresh, or, when that fails
    /// (another user's segment in the sticky `/dev/shm`), initialises it again in place and takes
    /// side 0. A failed removal thus never leaves the name unusable.
    fn remove_or_reuse(mut seg: Segment, opts: &ChannelOptions) -> Result<Joined, Error> {
        let Err(unlink) = seg.unlink() else {
            return Ok(Joined::Again);
        };
        Self::reinit(seg, opts)
            .map(|ch| Joined::Channel(Box::new(ch)))
            .map_err(|e| Error::Os(format!("{unlink}, and it cannot be re-initialised in place: {e}")))
    }

    /// Initialises again, in place, a segment this process holds alone, and takes side 0. The
    /// segment keeps its capacity (its own one if it is readable, else the one its length fits,
    /// else ours), its owner and its mode; the generations of its sides go on from where they
    /// were, so no one who saw them sees them go back. Meanwhile openers wait for this process
    /// (`creator_pid`), and take over if it dies.
    fn reinit(seg: Segment, opts: &ChannelOptions) -> Result<Channel, Error> {
        let h = header_of(&seg);
        h.creator_pid.store(std::process::id(), SeqCst);
        h.init_state.store(INIT_PENDING, SeqCst);
        let readable = h.magic.load(SeqCst) == MAGIC && h.layout_version.load(SeqCst) == LAYOUT_VERSION;
        let own = h.capacity.load(SeqCst);
        let cap = if readable && own <= usize::MAX as u64 && capacity_is_valid(own as usize) {
            own as usize
        } else {
            (MIN_CAPACITY.trailing_zeros()..=MAX_CAPACITY.trailing_zeros())
                .map(|bits| 1usize << bits)
                .find(|&c| segment_bytes(c) == seg.len())
                .unwrap_or(opts.capacity)
        };
        let need = segment_bytes(cap);
        let seg = if seg.len() >= need {
            seg
        } else {
            let lengthened = Segment::grow(seg.os_id(), need).and_then(|()| match Segment::open(seg.os_id())? {
                Opened::Mapped(longer) if longer.len() >= need => Ok(longer),
                _ => Err(Error::Os(format!(
                    "{} is not {need} bytes long after lengthening it",
                    seg.path()
                ))),
            });
            match lengthened {
                Ok(longer) => longer,
                Err(e) => {
                    // Let the next opener try (it takes over from no holder after a while).
                    h.creator_pid.store(0, SeqCst);
                    return Err(e);
                }
            }
        };
        let base = seg.as_ptr();
        // SAFETY: `seg` is at least segment_bytes(cap) long, so both ring control blocks and both
        // doorbell areas lie inside it; while init_state is not READY and no side is attached,
        // no process reads or writes them.
        unsafe {
            for r in 0..2 {
                std::ptr::write_bytes(base.add(ring_offset(r, cap)), 0, RING_CONTROL_BYTES);
            }
            for side in 0..2 {
                std::ptr::write_bytes(base.add(doorbell_offset(side)), 0, DOORBELL_BYTES);
            }
        }
        let h = header_of(&seg);
        for slot in &h.slots {
            slot.state.store(SLOT_FREE, SeqCst);
            slot.pid.store(0, SeqCst);
            slot.start_time.store(0, SeqCst);
        }
        Self::init_new(
            seg,
            ChannelOptions {
                capacity: cap,
                ..opts.clone()
            },
        )
    }
}

/// The pids in the two slots ("" if none; "a and b" for two), once the dead were reaped: the
/// live processes holding the segment.
fn holders(h: &Header) -> String {
    let pids: Vec<String> = h
        .slots
        .iter()
        .map(|s| s.pid.load(SeqCst))
        .filter(|&pid| pid != 0)
        .map(|pid| pid.to_string())
        .collect();
    pids.join(" and ")
}

fn bad_magic(path: &str, magic: u64) -> Error {
    if magic == crate::lobby::LOBBY_MAGIC {
        return Error::Invalid(format!(
            "{path:?} is a server's lobby (serve() and connect()), not a two-party channel"
        ));
    }
    Error::Protocol(format!(
        "shared memory {path} is not a sharmipc channel: found magic {:?}, expected \"SHARMIPC\"",
        String::from_utf8_lossy(&magic.to_le_bytes())
    ))
}

/// The error for an object shorter than a header page whose first bytes are not the start of
/// a sharmipc segment (nor zeros), so that it is not lengthened.
fn foreign(seg: &Segment) -> Option<Error> {
    let n = seg.len().min(8);
    // SAFETY: the mapping is `seg.len()` bytes long, and only its first `n <= len` are read.
    let head = unsafe { std::slice::from_raw_parts(seg.as_ptr(), n) };
    if head.iter().all(|&b| b == 0) || head == &MAGIC.to_le_bytes()[..n] {
        return None;
    }
    let mut magic = [0u8; 8];
    magic[..n].copy_from_slice(head);
    Some(bad_magic(&seg.path(), u64::from_le_bytes(magic)))
}
