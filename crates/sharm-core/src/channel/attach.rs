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
use super::peer::Peer;
use super::{Batch, Channel, ChannelOptions, SendQueue, Shared};
use crate::doorbell::Doorbell;
use crate::error::Error;
use crate::framing::Reassembler;
use crate::layout::*;
use crate::liveness;
use crate::record::Kind;
use crate::ring::{Consumer, Producer, RingMem};
use crate::segment::{os_id_for, Created, Segment};

/// How long `open` keeps retrying while the segment is being created or removed by others.
const OPEN_PATIENCE: Duration = Duration::from_secs(2);

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
            queue: SendQueue::default(),
            opts,
            my_gen: gen,
            rx_gen: 0,
            rx_open: false,
            hold_from: None,
            peer: Peer::new(),
            pending: Batch::default(),
            closed: false,
        };
        ch.queue.push_message(Kind::Hello, gen as u64, 0, &[], 0);
        ch.flush()?;
        slot.state.store(SLOT_READY, SeqCst);
        ch.shared.peer_bell.ring();
        ch.refresh_peer();
        ch.flush()?;
        ch.open_rx()?;
        Ok(ch)
    }

    /// Starts reading the incoming ring once its producer welcomed this generation.
    pub(super) fn open_rx(&mut self) -> Result<(), Error> {
        if self.rx_open {
            return Ok(());
        }
        let (consumer, producer, at) = self.rx.welcome();
        if consumer != self.my_gen {
            return Ok(());
        }
        if self.rx.open_at(at).map_err(|e| self.broken(e))? {
            self.shared.peer_bell.ring();
        }
        self.asm.reset();
        self.rx_gen = producer;
        self.rx_open = true;
        self.shared.rx_cursor.store(at, SeqCst);
        self.shared.rx_open.store(true, SeqCst);
        Ok(())
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
            self.refresh_peer();
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
        let sh = &self.shared;
        sh.stop.store(true, SeqCst);
        sh.own_bell.ring();
        if let Some(t) = sh.thread.get() {
            t.unpark();
        }
        let h = sh.header();
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

fn bad_magic(os_id: &str, magic: u64) -> Error {
    Error::Protocol(format!(
        "shared memory {os_id} is not a sharmipc channel: found magic {:?}, expected \"SHARMIPC\"",
        String::from_utf8_lossy(&magic.to_le_bytes())
    ))
}
