//! Checks of what an attached side reads from the segment header: the `attach` word and the two
//! slots. Anyone with write access to the segment can scribble on them; what is read from there
//! is checked like what is read from the rings, and a violation breaks the channel with a
//! protocol error, rather than being taken for a peer that left (a scribbled pid looks dead and
//! would be reaped) or going unnoticed.
//!
//! The header is legitimately in flux while the peer attaches, leaves or is reaped (the CAS
//! sequences of `attach`), so a violation is one of:
//! - what holds at every instant while this side is attached ([`check_now`], run by the driving
//!   thread before every poll and send, and by the wake-up thread): only known bits in `attach`,
//!   this side's bit set and DEAD clear; this side's slot READY with this side's generation (and,
//!   for the wake-up thread, pid and start time); the peer slot's state one of FREE, ATTACHING,
//!   READY, and its generation not behind the one last announced by the peer (generations only
//!   grow, modulo 2^32). A peer slot BROKEN is the peer saying it found the header corrupt;
//! - what a second look one liveness interval later confirms ([`HeaderWatch`], the wake-up
//!   thread, before it reaps the peer): within one generation of the peer, its pid and start
//!   time do not change (a new attach bumps the generation first), its generation does not go
//!   back, and its pid becomes 0 while READY only when a reaper took it from a dead process; a
//!   READY slot with pid 0, or a taken slot whose bit is clear in `attach`, lasts only between two
//!   stores of the one reaping or leaving, so seeing it twice with the same generation is a
//!   violation. The reap that follows a look takes the peer only as that look saw it (its pid and
//!   start time), never as the slot reads at the reap: a scribble between the two would pass for
//!   a dead process and its reap for a departure. The first look at a newcomer's slot is taken by
//!   the poll that sees it join ([`HeaderWatch::joined`]), before this side acts on its arrival:
//!   the wake-up thread may run much later on a loaded machine, and a scribble before its first
//!   look would pass for the slot as it was.
//!
//! Not checked, as a crash leaves it too: a side's bit set in `attach` with its slot FREE (a
//! process killed between claiming a side and writing its slot).

use std::sync::atomic::Ordering::SeqCst;

use super::attach::reap_if_dead_as;
use crate::error::ProtocolError;
use crate::layout::{Header, ATTACH_DEAD, ATTACH_SIDE, SLOT_ATTACHING, SLOT_BROKEN, SLOT_FREE, SLOT_READY};
use crate::liveness;

/// Every bit the `attach` word may have.
pub(super) const ATTACH_KNOWN: u32 = ATTACH_SIDE[0] | ATTACH_SIDE[1] | ATTACH_DEAD;

/// The other cause of a lost side than a scribble.
const TAKEN: &str = " (unless another process took this one for dead, as processes in different PID namespaces do: \
                     in Docker, run both containers with a shared PID namespace, e.g. --pid=container:<id>)";

fn fault(what: String) -> ProtocolError {
    ProtocolError::Header(what)
}

/// Can the protocol have written this `attach` word? (DEAD is set only when no side is taken.)
pub(super) fn attach_word_is_valid(a: u32) -> bool {
    a & !ATTACH_KNOWN == 0 && (a & ATTACH_DEAD == 0 || a == ATTACH_DEAD)
}

/// Is `now` behind `before`, for generations that grow modulo 2^32?
fn went_back(before: u32, now: u32) -> bool {
    (now.wrapping_sub(before) as i32) < 0
}

/// The checks that hold at every instant while side `side` is attached with generation `gen`.
/// `peer_gen` is the last generation the peer announced (its slot's may only be ahead of it).
pub(super) fn check_now(h: &Header, side: usize, gen: u32, peer_gen: u32) -> Result<(), ProtocolError> {
    let a = h.attach.load(SeqCst);
    if !attach_word_is_valid(a) {
        return Err(fault(format!(
            "the attach word {a:#x} is none the protocol writes (bits {ATTACH_KNOWN:#x}: sides 0 and 1, and DEAD alone)"
        )));
    }
    if a & ATTACH_SIDE[side] == 0 {
        return Err(fault(format!(
            "the attach word {a:#x} says side {side}, this process's, is free{TAKEN}"
        )));
    }
    let own = &h.slots[side];
    let (state, own_gen) = (own.state.load(SeqCst), own.generation.load(SeqCst));
    if state != SLOT_READY || own_gen != gen {
        return Err(fault(format!(
            "side {side}, this process's, has state {state} and generation {own_gen} in its slot, not {SLOT_READY} (ready) and {gen}{TAKEN}"
        )));
    }
    let peer = 1 - side;
    let state = h.slots[peer].state.load(SeqCst);
    if state == SLOT_BROKEN {
        return Err(fault(format!("side {peer} found it corrupt and left")));
    }
    if ![SLOT_FREE, SLOT_ATTACHING, SLOT_READY].contains(&state) {
        return Err(fault(format!(
            "side {peer}'s slot has state {state}, expected {SLOT_FREE} (free), {SLOT_ATTACHING} (attaching) or {SLOT_READY} (ready)"
        )));
    }
    let now = h.slots[peer].generation.load(SeqCst);
    if went_back(peer_gen, now) {
        return Err(fault(format!(
            "side {peer}'s generation went back from {peer_gen} to {now}"
        )));
    }
    Ok(())
}

/// One consistent look at a slot (the generation read on both sides of the rest, as in a
/// seqlock).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct SlotLook {
    pub(super) gen: u32,
    state: u32,
    pid: u32,
    start: u64,
    /// Its bit in the `attach` word.
    taken: bool,
}

impl SlotLook {
    pub(super) fn read(h: &Header, side: usize) -> Option<SlotLook> {
        let s = &h.slots[side];
        let gen = s.generation.load(SeqCst);
        let state = s.state.load(SeqCst);
        let pid = s.pid.load(SeqCst);
        let start = s.start_time.load(SeqCst);
        let taken = h.attach.load(SeqCst) & ATTACH_SIDE[side] != 0;
        (s.generation.load(SeqCst) == gen).then_some(SlotLook {
            gen,
            state,
            pid,
            start,
            taken,
        })
    }

    /// Does it name its process (ready, with a pid)?
    fn holds_a_process(&self) -> bool {
        self.state == SLOT_READY && self.pid != 0
    }

    /// What is wrong with it if it lasts (it may be a moment of a leave or a reap).
    fn transient_fault(&self) -> Option<&'static str> {
        if self.state == SLOT_READY && self.pid == 0 {
            Some("is ready with pid 0")
        } else if self.state != SLOT_FREE && !self.taken {
            Some("is taken, but its bit is clear in the attach word")
        } else {
            None
        }
    }
}

/// The wake-up thread's checks of the header, which need what it saw at its last look.
pub(super) struct HeaderWatch {
    side: usize,
    gen: u32,
    pid: u32,
    start: u64,
    /// The peer's slot at the last look.
    peer: Option<SlotLook>,
}

impl HeaderWatch {
    /// For side `side`, attached with generation `gen` by this process. Takes its first look
    /// at the peer's slot now, on the thread that opened the channel: the wake-up thread may
    /// start late, and what it would first see of the peer is what later looks are checked
    /// against.
    pub(super) fn new(h: &Header, side: usize, gen: u32) -> HeaderWatch {
        let (pid, start) = liveness::current();
        HeaderWatch {
            side,
            gen,
            pid,
            start,
            peer: SlotLook::read(h, 1 - side),
        }
    }

    /// The peer's slot as the poll that saw it join read it: later looks at that generation are
    /// checked against it, unless this watch has looked at that generation ready, or a later one,
    /// itself. (A look of its own while the newcomer was still attaching saw no pid and no start
    /// time yet: nothing to check a later pid against, so a pid written over before this watch's
    /// first look at it ready would pass for the newcomer's, and its reap for a departure.)
    pub(super) fn joined(&mut self, look: SlotLook) {
        let replace = match self.peer {
            None => true,
            Some(p) => went_back(look.gen, p.gen) || p.gen == look.gen && !p.holds_a_process(),
        };
        if replace {
            self.peer = Some(look);
        }
    }

    /// Looks at the header; an error is certain. Call it before reaping the peer: a violation
    /// means its pid cannot be trusted.
    pub(super) fn look(&mut self, h: &Header) -> Result<(), ProtocolError> {
        let side = self.side;
        let peer_gen = self.peer.map_or(self.gen_floor(h), |p| p.gen);
        check_now(h, side, self.gen, peer_gen)?;
        let own = &h.slots[side];
        let (pid, start) = (own.pid.load(SeqCst), own.start_time.load(SeqCst));
        if pid != self.pid || (start != self.start && self.start != 0) {
            return Err(fault(format!(
                "side {side}, this process's, holds pid {pid} started at {start} in its slot, not {} started at {}{TAKEN}",
                self.pid, self.start
            )));
        }
        let peer = 1 - side;
        let Some(now) = SlotLook::read(h, peer) else {
            return Ok(()); // a new attach is under way: look next time
        };
        if let Some(before) = self.peer.filter(|b| b.gen == now.gen) {
            let both_ready = before.state == SLOT_READY && now.state == SLOT_READY;
            if both_ready && before.pid != 0 && now.pid != 0 && (before.pid, before.start) != (now.pid, now.start) {
                return Err(fault(format!(
                    "side {peer}'s slot changed from pid {} started at {} to pid {} started at {} within generation {}",
                    before.pid, before.start, now.pid, now.start, now.gen
                )));
            }
            // A READY slot loses its pid only to a reaper, which takes it only from a dead
            // process (one that leaves frees its slot first).
            if both_ready && before.pid != 0 && now.pid == 0 && liveness::is_alive(before.pid, before.start) {
                return Err(fault(format!(
                    "side {peer}'s slot is ready with pid 0, but its process {} is alive (generation {})",
                    before.pid, now.gen
                )));
            }
            if let Some(what) = now.transient_fault().filter(|_| before == now) {
                return Err(fault(format!(
                    "side {peer}'s slot {what} (state {}, generation {}), at two looks in a row",
                    now.state, now.gen
                )));
            }
        }
        self.peer = Some(now);
        Ok(())
    }

    /// Frees the peer's side if its process, as the last look saw it, is dead. The slot as it is
    /// now is not trusted: a pid or start time written over since that look would pass for a
    /// dead process, and its reap for a departure, where the next look reports a corrupt header.
    pub(super) fn reap_peer_if_dead(&self, h: &Header) -> bool {
        match self.peer {
            Some(p) if p.pid != 0 => reap_if_dead_as(h, 1 - self.side, p.pid, p.start),
            _ => false,
        }
    }

    /// Before its first look at the peer: its generation now, which later ones may not be behind.
    fn gen_floor(&self, h: &Header) -> u32 {
        h.slots[1 - self.side].generation.load(SeqCst)
    }
}
