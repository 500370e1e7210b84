//! What this side knows of its peer: the connection state, and the ordered sequence of the
//! peer's comings and goings handed to the layer above.
//!
//! The peer side of the segment is held by one process after another, each with a generation of
//! its own (bumped on every attach). Two views of it are kept apart:
//! - the *writing* view ([`Peer::tx`]): the generation we welcomed on our outgoing ring, to which
//!   every record we write goes. It changes in [`Channel::refresh_peer`], as soon as the peer's
//!   slot says so and before anything more is written: a departure is accounted for first (see
//!   `departure`), then a newcomer is welcomed at the current write index.
//! - the *reading* view (`Channel::rx_gen`): the generation whose records we are reading, from
//!   the producer's welcome or from its HELLO record.
//!
//! Events wait in [`Peer::events`], in the order they happened, and are handed out only when the
//! reading view allows: `Left(g)` once every record `g` wrote was read, `Joined(g)` once every
//! record of the peers before `g` was. So the layer above sees each peer's messages between its
//! `Joined` and its `Left`, every `Joined` is followed by exactly one `Left`, and the answers a
//! departed peer sent before it left still arrive before its `Left`.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::SeqCst;

use super::departure::Departure;
use super::Channel;
use crate::ProtocolError;

/// A change of the peer, as handed out by a poll (before that poll's messages).
#[derive(Debug)]
pub enum PeerEvent {
    /// A peer attached; from now on we write to it.
    Joined { generation: u32, pid: u32 },
    /// The peer of that generation left (closed, died, or was reaped), with what it did not get.
    Left(Departure),
}

impl PeerEvent {
    pub fn generation(&self) -> u32 {
        match self {
            PeerEvent::Joined { generation, .. } => *generation,
            PeerEvent::Left(d) => d.generation,
        }
    }
}

/// The peer we write to: its generation and where its records start in our outgoing ring.
#[derive(Clone, Copy, Debug)]
pub(super) struct TxPeer {
    pub(super) gen: u32,
    pub(super) from: u64,
}

/// What this side knows of its peer.
#[derive(Default)]
pub(super) struct Peer {
    /// The generation we write to, if one is attached.
    pub(super) tx: Option<TxPeer>,
    /// Events not yet handed out, oldest first.
    pub(super) events: VecDeque<PeerEvent>,
    /// The generation of the last `Joined` handed out (0: none yet).
    pub(super) last_joined: u32,
    /// The generation of the last `Joined` queued (0: none yet).
    pub(super) announced: u32,
    /// The peer slot as the last look saw it (each poll publishes it for the wake-up thread).
    pub(super) seen: (bool, u32),
    /// Departures seen so far (a blocking request watches this).
    pub(super) departures: u64,
    /// The highest request id accepted by a send so far: when a peer leaves, the requests up to
    /// it that still wait for an answer were meant for that peer.
    pub(super) last_request: u64,
}

impl Peer {
    pub(super) fn new() -> Peer {
        Peer {
            seen: (false, u32::MAX),
            ..Default::default()
        }
    }

    pub(super) fn note_request(&mut self, id: u64) {
        self.last_request = self.last_request.max(id);
    }
}

/// A view of the peer's slot, (connected, generation), as one word (for [`super::Shared`]).
pub(super) fn pack_view((connected, gen): (bool, u32)) -> u64 {
    (connected as u64) << 32 | gen as u64
}

/// The view [`pack_view`] packed.
pub(super) fn unpack_view(v: u64) -> (bool, u32) {
    (v >> 32 != 0, v as u32)
}

/// Is generation `a` older than `b`? (Generations count up and may wrap.)
pub(super) fn gen_before(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) > 0
}

impl Channel {
    /// Is a peer attached (one we write to, whose slot still says so)?
    pub fn peer_connected(&self) -> bool {
        match self.peer.tx {
            Some(t) => self.shared.peer_view() == (true, t.gen),
            None => false,
        }
    }

    /// Looks at the peer's slot: accounts for a peer that left, welcomes one that attached.
    pub(super) fn refresh_peer(&mut self) -> Result<(), ProtocolError> {
        let (connected, gen) = self.shared.peer_view();
        self.peer.seen = (connected, gen);
        if let Some(t) = self.peer.tx {
            if connected && gen == t.gen {
                return Ok(());
            }
            // A peer that found the header corrupt leaves its slot broken: that is the protocol
            // error it saw, not a departure (the header check may have run just before it left).
            self.header_sane()?;
            self.peer.tx = None;
            self.peer.departures += 1;
            let departure = self.account_departure(t);
            self.peer.events.push_back(PeerEvent::Left(departure));
        }
        if connected {
            // Whatever was written before is not for the newcomer: publish it, then say where
            // its records start.
            self.publish();
            self.tx.welcome(gen, self.my_gen);
            self.peer.tx = Some(TxPeer {
                gen,
                from: self.tx.write_index(),
            });
            let pid = self.shared.header().slots[1 - self.shared.side].pid.load(SeqCst);
            self.peer.announced = gen;
            self.peer.events.push_back(PeerEvent::Joined { generation: gen, pid });
        } else if gen == self.rx_gen && gen != 0 && gen != self.peer.announced && self.welcomed_by(gen) {
            // A peer that attached, wrote to us and left between two looks at its slot (this
            // thread was busy meanwhile): it comes and goes too, its departure after its last
            // record. (It welcomed us once it was ready; one that is still attaching wrote its
            // HELLO, but no welcome yet.) Nothing of ours went to it (nothing was meant for it:
            // what waits in the queue waits for the next peer), and its pid went with its slot
            // (0).
            self.header_sane()?;
            self.peer.announced = gen;
            self.peer.events.push_back(PeerEvent::Joined {
                generation: gen,
                pid: 0,
            });
            self.peer.events.push_back(PeerEvent::Left(Departure {
                generation: gen,
                ..Default::default()
            }));
        }
        Ok(())
    }

    /// Looks at the peer's slot ([`Channel::refresh_peer`]) and starts reading the incoming ring
    /// once its first producer welcomed this side; then looks again, since that welcome names the
    /// generation that wrote to us: a first peer that came and left before this look, with no
    /// record past its HELLO, is known from it alone (and no later change of its slot would bring
    /// another look).
    pub(super) fn look_at_peer(&mut self) -> Result<(), crate::error::Error> {
        self.refresh_peer()?;
        if self.open_rx()? {
            self.refresh_peer()?;
        }
        Ok(())
    }

    /// Did generation `gen` of the peer welcome this one to its ring (which it does once ready)?
    fn welcomed_by(&self, gen: u32) -> bool {
        let (consumer, producer, _) = self.rx.welcome();
        consumer == self.my_gen && producer == gen
    }

    /// May the oldest waiting event be handed out now, given what was read? `limit`: the
    /// generation whose records come next in a batch kept by a blocking request.
    fn event_ready(&self, ev: &PeerEvent, limit: Option<u32>) -> bool {
        let g = ev.generation();
        if let Some(next) = limit {
            return gen_before(g, next) || matches!(ev, PeerEvent::Joined { .. }) && g == next;
        }
        if !self.rx_open || !self.rx.has_data() {
            return true;
        }
        match ev {
            // Every record of the peers before `g` was read.
            PeerEvent::Joined { .. } => !gen_before(self.rx_gen, g),
            // Every record of `g` was read (a later peer's records are being read).
            PeerEvent::Left(_) => gen_before(g, self.rx_gen),
        }
    }

    /// Is an event ready to be handed out?
    pub(super) fn events_ready(&self) -> bool {
        self.peer.events.front().is_some_and(|ev| self.event_ready(ev, None))
    }

    /// Takes the events that may be handed out now, in order.
    pub(super) fn take_events(&mut self, limit: Option<u32>, out: &mut Vec<PeerEvent>) {
        while let Some(ev) = self.peer.events.front() {
            if !self.event_ready(ev, limit) {
                break;
            }
            let ev = self.peer.events.pop_front().expect("front exists");
            if let PeerEvent::Joined { generation, .. } = ev {
                self.peer.last_joined = generation;
            }
            out.push(ev);
        }
    }
}
