//! The lobby of a server: the small named segment where the clients of a server take a place and
//! the server learns of them. Each client then talks to the server over a two-party channel of
//! its own ([`Lobby::channel_name`]), so every ring keeps one writer and one reader.
//!
//! ```text
//! 0       header: identity, the lobby's state, the server's place
//! 128     the server's name: its length (u32), then its bytes (at most MAX_NAME)
//! 512     the server's doorbell: a client rings it when it takes or leaves a place
//! 4096    MAX_CLIENTS places of PLACE_BYTES: holder (pid and state), ticket, start time
//! ```
//!
//! A place (the server's, or a client's) is held by the process whose pid is in its `holder`
//! word, with the place's state (TAKEN, then READY once its ticket and start time are written and,
//! for a client, its channel is made: [`Lobby::ready`], so the server never opens, let alone
//! creates, a client's channel before the client made it with the access mode it chose):
//! one word, so that taking (a CAS from 0), giving back and freeing a dead holder's place (a CAS
//! back to 0, of the word as it was looked at) are each one step, and no late store of one lands
//! on the next holder's place. A client's place also holds a ticket, unique in the lobby, which
//! names the client's channel: a place taken again is a new channel. A dead client's place is
//! freed by the live server, after it closed that client's channel, or, while no server is alive,
//! by whoever finds it (who also removes the client's channel, which nobody alive holds). A place
//! whose holder died before it was READY has no channel yet: the server's watch frees it.
//!
//! The last holder out removes the segment. Deciding that nobody holds it and taking a place race,
//! so both go through the `state` word like two threads through Dekker's lock: a leaver that found
//! no holder sets DEAD (with its pid), then looks again, and backs off (OPEN again) if someone
//! took a place meanwhile; a taker sets its holder word, then reads `state`, and gives its place
//! back and opens anew if it is DEAD. (All SeqCst: of the two, at least one sees the other's
//! write.) A remover that cannot remove the name (another user's file in the sticky `/dev/shm`)
//! sets OPEN again, and one that died before it removed it is found dead by the next taker, which
//! sets OPEN again: the segment is used in place.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use crate::channel::{Channel, ChannelOptions};
use crate::doorbell::Doorbell;
use crate::error::Error;
use crate::layout::{INIT_ABANDONED, INIT_READY, MAGIC};
use crate::liveness;
use crate::segment::{os_id_for, Created, Opened, Segment};

/// "SHRMLOBY" read as a little-endian u64.
pub const LOBBY_MAGIC: u64 = u64::from_le_bytes(*b"SHRMLOBY");
/// Version of the lobby's byte layout and of its protocol.
pub const LOBBY_VERSION: u32 = 1;
/// The most clients a lobby has places for.
pub const MAX_CLIENTS: usize = 1024;
const NAME_OFFSET: usize = 128;
const BELL_OFFSET: usize = 512;
const PLACES_OFFSET: usize = 4096;
const PLACE_BYTES: usize = 32;
/// Size of a lobby segment.
pub const LOBBY_BYTES: usize = PLACES_OFFSET + MAX_CLIENTS * PLACE_BYTES;
/// Longest server name: its clients' channel names add a place number and a ticket to it.
pub const MAX_NAME: usize = 128 - 16;

/// `state`: in use.
const OPEN: u64 = 1;
/// `state`: the last holder left and is removing the segment: `word(its pid, DEAD)`.
const DEAD: u32 = 2;

/// Place states: taken (the rest being written), then ready.
const TAKEN: u32 = 1;
const READY: u32 = 2;

/// A holder word: `pid` and `state`.
const fn word(pid: u32, state: u32) -> u64 {
    (pid as u64) << 32 | state as u64
}

/// The pid and state of a holder word.
const fn parts(w: u64) -> (u32, u32) {
    ((w >> 32) as u32, w as u32)
}

/// How long an opener waits for a lobby that is being made or removed.
const PATIENCE: Duration = Duration::from_secs(2);

#[repr(C)]
struct Place {
    /// `word(pid, state)` of its holder; 0: free.
    holder: AtomicU64,
    /// Written by the holder after it took the place, before it is READY.
    ticket: AtomicU32,
    _pad: u32,
    start: AtomicU64,
    _reserved: u64,
}

/// A place as one look saw it (consistent: its holder word read before and after the rest).
#[derive(Clone, Copy)]
struct Look {
    word: u64,
    pid: u32,
    state: u32,
    /// The ticket and start time, once READY (0 before).
    ticket: u32,
    start: u64,
}

impl Look {
    /// Is the holder alive? (Its start time is known only once READY.)
    fn alive(&self) -> bool {
        liveness::is_alive(self.pid, self.start)
    }
}

impl Place {
    /// Who holds it, if anyone.
    fn look(&self) -> Option<Look> {
        loop {
            let w = self.holder.load(SeqCst);
            if w == 0 {
                return None;
            }
            let (pid, state) = parts(w);
            let (ticket, start) = (self.ticket.load(SeqCst), self.start.load(SeqCst));
            if self.holder.load(SeqCst) == w {
                let ready = state == READY;
                return Some(Look {
                    word: w,
                    pid,
                    state,
                    ticket: if ready { ticket } else { 0 },
                    start: if ready { start } else { 0 },
                });
            }
        }
    }

    /// Frees it if it is still as `look` saw it and its holder is dead. Returns whether it did.
    fn free_if_dead(&self, look: &Look) -> bool {
        !look.alive() && self.holder.compare_exchange(look.word, 0, SeqCst, SeqCst).is_ok()
    }

    /// Frees it if `pid` holds it (its holder leaving).
    fn give_back(&self, pid: u32) {
        let w = self.holder.load(SeqCst);
        if w != 0 && parts(w).0 == pid {
            let _ = self.holder.compare_exchange(w, 0, SeqCst, SeqCst);
        }
    }

    /// The holder `pid` says it is READY (its ticket and start time are written).
    fn ready(&self, pid: u32) {
        let _ = self
            .holder
            .compare_exchange(word(pid, TAKEN), word(pid, READY), SeqCst, SeqCst);
    }
}

#[repr(C)]
struct Header {
    magic: AtomicU64,
    version: AtomicU32,
    init_state: AtomicU32,
    creator_pid: AtomicU32,
    /// The most clients the server takes (0: no server said yet, so [`MAX_CLIENTS`]).
    max_clients: AtomicU32,
    /// The last ticket given.
    tickets: AtomicU32,
    _pad: u32,
    /// OPEN, or `word(remover's pid, DEAD)`.
    state: AtomicU64,
    server: Place,
}

const _: () = assert!(std::mem::size_of::<Place>() == PLACE_BYTES);
const _: () = assert!(std::mem::size_of::<Header>() <= NAME_OFFSET);
const _: () = assert!(NAME_OFFSET + 4 + MAX_NAME <= BELL_OFFSET);

/// A client's place as the server sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Client {
    pub index: u32,
    pub ticket: u32,
    pub pid: u32,
    /// Its process is alive.
    pub alive: bool,
}

/// What this process holds in a lobby.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Server,
    Client { index: u32, ticket: u32 },
}

/// One process's hold on a server's lobby.
pub struct Lobby {
    seg: Segment,
    bell: Doorbell,
    name: String,
    role: Role,
    left: bool,
}

// SAFETY: the mapping is plain shared memory, read and written only through atomics, and the
// doorbell is made to be used from several threads.
unsafe impl Send for Lobby {}
// SAFETY: as above; `&self` methods only touch atomics in the mapping and the doorbell.
unsafe impl Sync for Lobby {}

fn check_name(name: &str) -> Result<String, Error> {
    if name.len() > MAX_NAME {
        return Err(Error::Invalid(format!(
            "a server name is at most {MAX_NAME} bytes (its clients' channels are named after it), got {} bytes",
            name.len()
        )));
    }
    os_id_for(name)
}

impl Lobby {
    /// Opens (creating if needed) the lobby of server `name` and takes the server's place with at
    /// most `max_clients` clients. `ERR_SHARM_BUSY` if a live process serves it already.
    pub fn serve(name: &str, max_clients: u32, mode: u32) -> Result<Lobby, Error> {
        if max_clients == 0 || max_clients as usize > MAX_CLIENTS {
            return Err(Error::Invalid(format!(
                "maxClients must be from 1 to {MAX_CLIENTS}, got {max_clients}"
            )));
        }
        Self::enter(name, mode, |l| {
            let h = l.header();
            let me = liveness::current();
            match take(&h.server, me, l, true) {
                Taken::Yes => {}
                Taken::Removed => return Ok(None),
                Taken::Held(pid) => {
                    return Err(Error::Busy(format!(
                        "server {name:?} is served already, by process {pid}"
                    )))
                }
            }
            h.max_clients.store(max_clients, SeqCst);
            h.server.ready(me.0);
            Ok(Some(Role::Server))
        })
    }

    /// Opens (creating if needed) the lobby of server `name` and takes a client's place; the
    /// server sees it once the client made its channel ([`Lobby::channel_name`]) and called
    /// [`Lobby::ready`]. `ERR_SHARM_BUSY` if the server has its `maxClients` clients.
    pub fn join(name: &str, mode: u32) -> Result<Lobby, Error> {
        Self::enter(name, mode, |l| {
            let h = l.header();
            let max = match h.max_clients.load(SeqCst) {
                0 => MAX_CLIENTS,
                n => (n as usize).min(MAX_CLIENTS),
            };
            let me = liveness::current();
            for index in 0..max {
                let place = l.place(index);
                match take(place, me, l, false) {
                    Taken::Yes => {}
                    Taken::Held(_) => continue,
                    Taken::Removed => return Ok(None),
                }
                let mut ticket = h.tickets.fetch_add(1, SeqCst).wrapping_add(1);
                if ticket == 0 {
                    ticket = h.tickets.fetch_add(1, SeqCst).wrapping_add(1);
                }
                place.ticket.store(ticket, SeqCst);
                return Ok(Some(Role::Client {
                    index: index as u32,
                    ticket,
                }));
            }
            Err(Error::Busy(format!(
                "server {name:?} has its maxClients ({max}) clients: no place is free"
            )))
        })
    }

    /// A client's place is ready: its channel is made. The server sees the client from now on.
    pub fn ready(&self) {
        if let Role::Client { index, .. } = self.role {
            self.place(index as usize).ready(std::process::id());
            self.bell.ring();
        }
    }

    /// Opens the lobby and runs `take` on it until it takes a place (`None`: the lobby is being
    /// removed, open it anew).
    fn enter(name: &str, mode: u32, take: impl Fn(&Lobby) -> Result<Option<Role>, Error>) -> Result<Lobby, Error> {
        let os_id = check_name(name)?;
        let started = Instant::now();
        loop {
            let waiting = match Self::open_segment(name, &os_id, mode)? {
                Some(seg) => {
                    // SAFETY: the doorbell lies in the header page, initialised before READY.
                    let bell = unsafe { Doorbell::attach(seg.as_ptr().add(BELL_OFFSET))? };
                    let mut l = Lobby {
                        seg,
                        bell,
                        name: name.to_string(),
                        role: Role::Server,
                        left: true,
                    };
                    match take(&l)? {
                        Some(role) => {
                            l.role = role;
                            l.left = false;
                            return Ok(l);
                        }
                        None => {
                            reopen_if_remover_died(l.header());
                            "being removed by the last process that left it"
                        }
                    }
                }
                None => "being made or removed by another process",
            };
            if started.elapsed() > PATIENCE {
                return Err(Error::Os(format!(
                    "could not open the lobby of server {name:?}: after {} ms its segment {os_id} is still {waiting}",
                    PATIENCE.as_millis()
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Creates or maps the lobby segment of server `name`; `None` while another process makes or
    /// removes it.
    fn open_segment(name: &str, os_id: &str, mode: u32) -> Result<Option<Segment>, Error> {
        if let Created::New(mut seg) = Segment::create(os_id, LOBBY_BYTES)? {
            let h = header_at(&seg);
            if h.creator_pid
                .compare_exchange(0, std::process::id(), SeqCst, SeqCst)
                .is_ok()
            {
                if mode != 0o600 {
                    if let Err(e) = seg.set_mode(mode) {
                        let _ = seg.unlink();
                        return Err(e);
                    }
                }
                h.magic.store(LOBBY_MAGIC, SeqCst);
                h.version.store(LOBBY_VERSION, SeqCst);
                // SAFETY: the name area lies in the header page (asserted above) and `name` is at
                // most MAX_NAME bytes (checked by `check_name`); nobody reads it before READY.
                unsafe {
                    let at = seg.as_ptr().add(NAME_OFFSET);
                    std::ptr::copy_nonoverlapping((name.len() as u32).to_le_bytes().as_ptr(), at, 4);
                    std::ptr::copy_nonoverlapping(name.as_ptr(), at.add(4), name.len());
                }
                // SAFETY: the doorbell lies in the header page; nobody uses it before READY.
                unsafe { Doorbell::init(seg.as_ptr().add(BELL_OFFSET))? };
                h.state.store(OPEN, SeqCst);
                h.init_state.store(INIT_READY, SeqCst);
                return Ok(Some(seg));
            }
        }
        let mut seg = match Segment::open(os_id)? {
            Opened::Mapped(seg) => seg,
            Opened::Missing | Opened::Empty => return Ok(None),
        };
        if seg.len() < PLACES_OFFSET {
            return Err(Error::Protocol(format!(
                "shared memory {} is {} bytes, too short for a server's lobby ({LOBBY_BYTES} bytes)",
                seg.path(),
                seg.len()
            )));
        }
        let h = header_at(&seg);
        // Its magic first: what is not a lobby is never taken over.
        let magic = h.magic.load(SeqCst);
        if magic == MAGIC {
            return Err(Error::Invalid(format!(
                "{:?} is a two-party channel (opened with open()), not a server's lobby",
                seg.path()
            )));
        }
        if magic != 0 && magic != LOBBY_MAGIC {
            return Err(Error::Protocol(format!(
                "shared memory {} is not a sharmipc server's lobby: found magic {:?}, expected \"SHRMLOBY\"",
                seg.path(),
                String::from_utf8_lossy(&magic.to_le_bytes())
            )));
        }
        if h.init_state.load(SeqCst) != INIT_READY {
            // Its maker died half-way: whoever takes it over removes it.
            let maker = h.creator_pid.load(SeqCst);
            if maker != 0
                && !liveness::is_alive(maker, 0)
                && h.creator_pid
                    .compare_exchange(maker, std::process::id(), SeqCst, SeqCst)
                    .is_ok()
            {
                h.init_state.store(INIT_ABANDONED, SeqCst);
                seg.unlink()?;
            }
            return Ok(None);
        }
        let version = h.version.load(SeqCst);
        if version != LOBBY_VERSION {
            return Err(Error::Protocol(format!(
                "the lobby {} has version {version}; this sharmipc speaks {LOBBY_VERSION}",
                seg.path()
            )));
        }
        if seg.len() < LOBBY_BYTES {
            return Err(Error::Protocol(format!(
                "the lobby {} is {} bytes, not {LOBBY_BYTES}: it was truncated",
                seg.path(),
                seg.len()
            )));
        }
        Ok(Some(seg))
    }

    fn header(&self) -> &Header {
        header_at(&self.seg)
    }

    fn place(&self, index: usize) -> &Place {
        place_at(&self.seg, index)
    }

    /// What this process holds.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The name of the channel of the client in place `index` with `ticket`.
    pub fn channel_name(&self, index: u32, ticket: u32) -> String {
        channel_name(&self.name, index, ticket)
    }

    /// OS name of the lobby segment.
    pub fn os_id(&self) -> &str {
        self.seg.os_id()
    }

    /// Access mode of the lobby segment (Unix; `None` where it cannot be read): a client's channel
    /// is created with it unless the client asks for another.
    pub fn mode(&self) -> Option<u32> {
        self.seg.mode()
    }

    /// The clients' places that are taken and ready, in place order.
    pub fn clients(&self) -> Vec<Client> {
        (0..MAX_CLIENTS)
            .filter_map(|index| {
                let look = self.place(index).look().filter(|l| l.state == READY)?;
                Some(Client {
                    index: index as u32,
                    ticket: look.ticket,
                    pid: look.pid,
                    alive: look.alive(),
                })
            })
            .collect()
    }

    /// The server frees the place of a client whose process is dead (after it closed the
    /// client's channel). Returns whether it did.
    pub fn free_dead(&self, index: u32, ticket: u32) -> bool {
        if index as usize >= MAX_CLIENTS {
            return false;
        }
        let p = self.place(index as usize);
        p.look()
            .is_some_and(|look| look.ticket == ticket && p.free_if_dead(&look))
    }

    /// Frees the places of clients that died before they were READY (they have no channel yet).
    /// Returns how many.
    pub fn free_dead_unready(&self) -> usize {
        (0..MAX_CLIENTS)
            .filter(|&index| {
                let p = self.place(index);
                p.look()
                    .is_some_and(|look| look.state != READY && p.free_if_dead(&look))
            })
            .count()
    }

    /// Waits at most `timeout` for a client to ring (take or leave a place). Server only.
    pub fn wait(&self, timeout: Duration) -> bool {
        self.bell.wait(timeout)
    }

    /// Wakes a [`Lobby::wait`] of this process's server at once (for its shutdown).
    pub fn ring(&self) {
        self.bell.ring();
    }

    /// Gives up this process's place, and removes the segment if nobody holds one any more.
    /// Idempotent.
    pub fn leave(&mut self) {
        if self.left {
            return;
        }
        self.left = true;
        let me = std::process::id();
        let place = match self.role {
            Role::Server => &self.header().server,
            Role::Client { index, .. } => self.place(index as usize),
        };
        place.give_back(me);
        self.bell.ring();
        self.remove_if_unheld();
    }

    /// Is a place held by a live process? Frees the places of dead ones it finds (clients' only
    /// while no server is alive, removing their channels).
    fn held(&self) -> bool {
        let h = self.header();
        if let Some(server) = h.server.look() {
            if !h.server.free_if_dead(&server) {
                return true;
            }
        }
        let mut held = false;
        for index in 0..MAX_CLIENTS {
            let p = self.place(index);
            let Some(look) = p.look() else { continue };
            if look.alive() {
                held = true;
                continue;
            }
            if look.ticket != 0 && !self.name.is_empty() {
                remove_stale_channel(&self.channel_name(index as u32, look.ticket));
            }
            if !p.free_if_dead(&look) && p.look().is_some() {
                held = true;
            }
        }
        held
    }

    /// The leaver's half of the Dekker handshake: if nobody holds a place, marks the lobby DEAD
    /// and removes it. Returns whether it did.
    fn remove_if_unheld(&mut self) -> bool {
        let h = self.header();
        let dead = word(std::process::id(), DEAD);
        if self.held() || h.state.compare_exchange(OPEN, dead, SeqCst, SeqCst).is_err() {
            return false;
        }
        if self.held() {
            h.state.store(OPEN, SeqCst);
            return false;
        }
        if self.seg.unlink().is_err() {
            // Not ours to remove (another user's, in the sticky /dev/shm): it stays, in use.
            self.header().state.store(OPEN, SeqCst);
            return false;
        }
        true
    }
}

/// A lobby left DEAD by a remover that died before it removed it is used in place: OPEN again.
fn reopen_if_remover_died(h: &Header) {
    let st = h.state.load(SeqCst);
    let (remover, tag) = parts(st);
    if tag == DEAD && !liveness::is_alive(remover, 0) {
        let _ = h.state.compare_exchange(st, OPEN, SeqCst, SeqCst);
    }
}

impl Drop for Lobby {
    fn drop(&mut self) {
        self.leave();
    }
}

/// The server name written in a lobby's header, if it is one whose OS name is `os_id`.
fn stored_name(seg: &Segment) -> Option<String> {
    let mut len = [0u8; 4];
    // SAFETY: the segment is at least a page long (checked by the caller); the name area lies in
    // the header page, and is read as plain bytes.
    unsafe { std::ptr::copy_nonoverlapping(seg.as_ptr().add(NAME_OFFSET), len.as_mut_ptr(), 4) };
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 || len > MAX_NAME {
        return None;
    }
    let mut bytes = vec![0u8; len];
    // SAFETY: as above, `len <= MAX_NAME` bytes after the length.
    unsafe { std::ptr::copy_nonoverlapping(seg.as_ptr().add(NAME_OFFSET + 4), bytes.as_mut_ptr(), len) };
    let name = String::from_utf8(bytes).ok()?;
    (os_id_for(&name).ok().as_deref() == Some(seg.os_id())).then_some(name)
}

/// What `sharmipc clean` does with a lobby: frees the places of dead processes (and removes the
/// channels of dead clients while no server is alive), then removes the lobby if nobody alive
/// holds a place. `Err` with the holders' pids if someone does; `Ok(false)` if it is being made
/// or removed right now.
pub fn clean(os_id: &str) -> Result<Result<bool, String>, Error> {
    let seg = match Segment::open(os_id)? {
        Opened::Mapped(seg) => seg,
        Opened::Missing => return Err(Error::Invalid(format!("no segment {os_id}"))),
        Opened::Empty => return Ok(Ok(false)),
    };
    if seg.len() < LOBBY_BYTES {
        return Err(Error::Protocol(format!(
            "the lobby {} is {} bytes, not {LOBBY_BYTES}: it was truncated",
            seg.path(),
            seg.len()
        )));
    }
    let h = header_at(&seg);
    if h.magic.load(SeqCst) != LOBBY_MAGIC || h.init_state.load(SeqCst) != INIT_READY {
        return Ok(Ok(false));
    }
    // SAFETY: the doorbell lies in the header page, initialised before READY.
    let bell = unsafe { Doorbell::attach(seg.as_ptr().add(BELL_OFFSET))? };
    // Without its name, dead clients' channels cannot be found: their places are still freed.
    let name = stored_name(&seg).unwrap_or_default();
    reopen_if_remover_died(h);
    let mut l = Lobby {
        seg,
        bell,
        name,
        role: Role::Server,
        left: true,
    };
    if l.remove_if_unheld() {
        return Ok(Ok(true));
    }
    let h = l.header();
    if h.state.load(SeqCst) != OPEN {
        return Ok(Ok(false));
    }
    let live: Vec<String> = std::iter::once((&h.server, "server"))
        .chain((0..MAX_CLIENTS).map(|i| (l.place(i), "client")))
        .filter_map(|(p, what)| {
            let look = p.look().filter(Look::alive)?;
            Some(format!("pid {} ({what})", look.pid))
        })
        .collect();
    Ok(Err(live.join(", ")))
}

/// What `sharmipc list` and `inspect` show of a lobby.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Its server's pid; 0: no server holds it.
    pub server_pid: u32,
    pub server_alive: bool,
    /// Places held by clients (ready or not), and how many of those clients are alive.
    pub clients: u32,
    pub clients_alive: u32,
}

/// The [`Summary`] of the lobby under `os_id`; `None` if it is missing, empty, shorter than a
/// lobby or not (yet) one.
pub fn summary(os_id: &str) -> Option<Summary> {
    let Ok(Opened::Mapped(seg)) = Segment::open(os_id) else {
        return None;
    };
    if seg.len() < LOBBY_BYTES {
        return None;
    }
    let h = header_at(&seg);
    if h.magic.load(SeqCst) != LOBBY_MAGIC || h.init_state.load(SeqCst) != INIT_READY {
        return None;
    }
    let mut sum = Summary::default();
    if let Some(server) = h.server.look() {
        sum.server_pid = server.pid;
        sum.server_alive = server.alive();
    }
    for look in (0..MAX_CLIENTS).filter_map(|i| place_at(&seg, i).look()) {
        sum.clients += 1;
        sum.clients_alive += u32::from(look.alive());
    }
    Some(sum)
}

/// Client place `index` of lobby segment `seg` (at least [`LOBBY_BYTES`] long).
fn place_at(seg: &Segment, index: usize) -> &Place {
    assert!(index < MAX_CLIENTS && seg.len() >= LOBBY_BYTES);
    // SAFETY: the segment is LOBBY_BYTES long (asserted); places are 8-byte aligned atomics, and
    // the reference lives no longer than the mapping.
    unsafe { &*(seg.as_ptr().add(PLACES_OFFSET + index * PLACE_BYTES) as *const Place) }
}

fn header_at(seg: &Segment) -> &Header {
    assert!(seg.len() >= PLACES_OFFSET);
    // SAFETY: the mapping is page-aligned and at least a page long; `Header` is all atomics.
    unsafe { &*(seg.as_ptr() as *const Header) }
}

/// The name of the channel of the client in place `index` with `ticket`, of server `server`.
pub fn channel_name(server: &str, index: u32, ticket: u32) -> String {
    format!("{server}.{index}-{ticket}")
}

/// What [`take`] came to.
enum Taken {
    Yes,
    /// A live process holds the place: this one.
    Held(u32),
    /// The lobby is being removed: the place was given back, open the lobby anew.
    Removed,
}

/// Takes `place` for this process (`me`: pid and start time), TAKEN, freeing it first if its
/// holder is dead (a client's only if `server` is set, or no server is alive, since a live server
/// frees its clients' places itself, after closing their channels). The caller writes the rest
/// and makes it READY.
fn take(place: &Place, (pid, start): (u32, u64), l: &Lobby, server: bool) -> Taken {
    let h = l.header();
    loop {
        if let Some(look) = place.look() {
            let no_server = h.server.look().is_none_or(|s| h.server.free_if_dead(&s));
            if !(server || no_server) || look.alive() {
                return Taken::Held(look.pid);
            }
            if !server && look.ticket != 0 {
                remove_stale_channel(&l.channel_name(index_of(l, place), look.ticket));
            }
            place.free_if_dead(&look);
            continue;
        }
        if place
            .holder
            .compare_exchange(0, word(pid, TAKEN), SeqCst, SeqCst)
            .is_err()
        {
            continue;
        }
        // The taker's half of the Dekker handshake with a leaver removing the lobby.
        if h.state.load(SeqCst) != OPEN {
            place.give_back(pid);
            return Taken::Removed;
        }
        place.start.store(start, SeqCst);
        return Taken::Yes;
    }
}

fn index_of(l: &Lobby, place: &Place) -> u32 {
    ((place as *const Place as usize - l.seg.as_ptr() as usize - PLACES_OFFSET) / PLACE_BYTES) as u32
}

/// Removes the channel of a dead client while no server is alive: nobody alive holds it, so
/// opening it takes it over and leaving it removes it.
fn remove_stale_channel(name: &str) {
    let opts = ChannelOptions {
        capacity: crate::layout::MIN_CAPACITY,
        loop_bell: false,
        ..Default::default()
    };
    if let Ok(mut ch) = Channel::open(name, opts) {
        ch.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gone(name: &str) -> bool {
        matches!(Segment::open(&os_id_for(name).unwrap()), Ok(Opened::Missing))
    }

    #[test]
    fn clients_take_places_with_their_own_tickets_and_the_last_one_out_removes_the_lobby() {
        let name = format!("lobby-places-{}", std::process::id());
        let client = Lobby::join(&name, 0o600).unwrap();
        client.ready();
        let server = Lobby::serve(&name, 4, 0o600).unwrap();
        let second = Lobby::serve(&name, 4, 0o600).map(|_| ()).unwrap_err();
        assert_eq!(second.code(), "ERR_SHARM_BUSY", "{second}");
        let other = Lobby::join(&name, 0o600).unwrap();
        other.ready();
        let seen = server.clients();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen.iter().all(|c| c.alive && c.pid == std::process::id()));
        assert_ne!(seen[0].ticket, seen[1].ticket);
        assert_eq!(
            Role::Client {
                index: seen[1].index,
                ticket: seen[1].ticket
            },
            other.role()
        );
        drop(client);
        assert_eq!(server.clients().len(), 1);
        drop(server);
        assert!(!gone(&name), "a client still holds a place");
        drop(other);
        assert!(gone(&name), "the last one out removes the lobby");
    }

    #[test]
    fn a_client_past_max_clients_is_refused_and_disturbs_nothing() {
        let name = format!("lobby-max-{}", std::process::id());
        let server = Lobby::serve(&name, 1, 0o600).unwrap();
        let first = Lobby::join(&name, 0o600).unwrap();
        first.ready();
        let e = Lobby::join(&name, 0o600).map(|_| ()).unwrap_err();
        assert_eq!(e.code(), "ERR_SHARM_BUSY");
        assert!(e.to_string().contains("maxClients (1)"), "{e}");
        assert_eq!(server.clients().len(), 1);
        drop(first);
        let again = Lobby::join(&name, 0o600).unwrap();
        again.ready();
        assert_eq!(server.clients().len(), 1);
        drop(again);
    }

    #[test]
    fn a_dead_clients_place_is_freed_by_the_server_or_while_no_server_lives_by_anyone() {
        let name = format!("lobby-dead-{}", std::process::id());
        let server = Lobby::serve(&name, 8, 0o600).unwrap();
        let client = Lobby::join(&name, 0o600).unwrap();
        client.ready();
        let Role::Client { index, ticket } = client.role() else {
            unreachable!()
        };
        // The client "dies": its place holds a pid no process has.
        std::mem::forget(client);
        let place = server.place(index as usize);
        place
            .holder
            .store(word(crate::test_process::exited_pid(), READY), SeqCst);
        let seen = server.clients();
        assert_eq!(seen.len(), 1);
        assert!(!seen[0].alive);
        // A live server frees it itself: a newcomer takes another place.
        let newcomer = Lobby::join(&name, 0o600).unwrap();
        newcomer.ready();
        assert_ne!(newcomer.role(), client_role(index, ticket));
        assert!(
            !server.free_dead(index, ticket + 1),
            "another ticket's place is not freed"
        );
        assert!(server.free_dead(index, ticket));
        assert_eq!(server.clients().len(), 1);
        // With no server, the next one in frees a dead client's place.
        place.ticket.store(ticket, SeqCst);
        place
            .holder
            .store(word(crate::test_process::exited_pid(), READY), SeqCst);
        drop(server);
        drop(newcomer);
        assert!(gone(&name), "the dead client's place does not keep the lobby");
    }

    #[test]
    fn freeing_a_dead_holders_place_as_an_old_look_saw_it_never_frees_the_next_holders() {
        // Two processes find the same dead client's place; one frees it and a newcomer takes it
        // before the other acts on its own, older look.
        let name = format!("lobby-race-{}", std::process::id());
        let server = Lobby::serve(&name, 8, 0o600).unwrap();
        let place = server.place(0);
        place.ticket.store(7, SeqCst);
        place
            .holder
            .store(word(crate::test_process::exited_pid(), READY), SeqCst);
        let first = place.look().unwrap();
        let second = place.look().unwrap();
        assert!(place.free_if_dead(&first));
        let newcomer = Lobby::join(&name, 0o600).unwrap();
        newcomer.ready();
        let Role::Client { index: 0, ticket } = newcomer.role() else {
            panic!("the newcomer took {:?}, not place 0", newcomer.role())
        };
        assert!(!place.free_if_dead(&second), "a late free took the newcomer's place");
        let now = place.look().unwrap();
        assert_eq!((now.pid, now.state, now.ticket), (std::process::id(), READY, ticket));
        drop(newcomer);
        drop(server);
        assert!(gone(&name));
    }

    #[test]
    fn the_server_sees_a_client_only_once_it_is_ready() {
        let name = format!("lobby-ready-{}", std::process::id());
        let server = Lobby::serve(&name, 8, 0o600).unwrap();
        let client = Lobby::join(&name, 0o600).unwrap();
        assert!(
            server.clients().is_empty(),
            "a client that has not made its channel yet"
        );
        client.ready();
        assert!(
            server.wait(Duration::from_secs(5)),
            "ready() rings the server's doorbell"
        );
        let seen = server.clients();
        assert_eq!(seen.len(), 1);
        assert_eq!(client_role(seen[0].index, seen[0].ticket), client.role());
        drop(client);
        drop(server);
        assert!(gone(&name));
    }

    #[test]
    fn a_summary_counts_the_server_and_the_clients_alive_and_dead() {
        let name = format!("lobby-summary-{}", std::process::id());
        let os_id = os_id_for(&name).unwrap();
        let server = Lobby::serve(&name, 8, 0o600).unwrap();
        let client = Lobby::join(&name, 0o600).unwrap();
        server
            .place(5)
            .holder
            .store(word(crate::test_process::exited_pid(), READY), SeqCst);
        let me = std::process::id();
        assert_eq!(
            summary(&os_id),
            Some(Summary {
                server_pid: me,
                server_alive: true,
                clients: 2,
                clients_alive: 1
            })
        );
        server.place(5).holder.store(0, SeqCst);
        drop(client);
        drop(server);
        assert_eq!(summary(&os_id), None, "removed");
    }

    #[test]
    fn a_place_whose_holder_died_before_it_was_ready_is_freed_while_the_server_lives() {
        let name = format!("lobby-unready-{}", std::process::id());
        let server = Lobby::serve(&name, 8, 0o600).unwrap();
        let place = server.place(3);
        place
            .holder
            .store(word(crate::test_process::exited_pid(), TAKEN), SeqCst);
        assert!(server.clients().is_empty(), "an unready place is no client");
        assert_eq!(server.free_dead_unready(), 1);
        assert!(place.look().is_none());
        drop(server);
        assert!(gone(&name));
    }

    #[test]
    fn a_lobby_left_dead_by_a_remover_that_died_before_removing_it_is_used_in_place() {
        let name = format!("lobby-dead-remover-{}", std::process::id());
        let server = Lobby::serve(&name, 8, 0o600).unwrap();
        let h = server.header();
        h.state.store(word(crate::test_process::exited_pid(), DEAD), SeqCst);
        let client = Lobby::join(&name, 0o600).unwrap();
        client.ready();
        assert_eq!(h.state.load(SeqCst), OPEN);
        assert_eq!(server.clients().len(), 1);
        drop(client);
        drop(server);
        assert!(gone(&name));
    }

    fn client_role(index: u32, ticket: u32) -> Role {
        Role::Client { index, ticket }
    }

    #[test]
    fn a_name_too_long_or_of_a_channel_is_refused_with_what_was_expected() {
        let long = "n".repeat(MAX_NAME + 1);
        let e = Lobby::serve(&long, 1, 0o600).map(|_| ()).unwrap_err();
        assert!(e.to_string().contains(&format!("at most {MAX_NAME} bytes")), "{e}");
        let name = format!("lobby-chan-{}", std::process::id());
        let ch = Channel::open(&name, ChannelOptions::default()).unwrap();
        let e = Lobby::join(&name, 0o600).map(|_| ()).unwrap_err();
        assert!(e.to_string().contains("is a two-party channel"), "{e}");
        drop(ch);
        let lobby = Lobby::serve(&name, 1, 0o600).unwrap();
        let e = Channel::open(&name, ChannelOptions::default()).map(|_| ()).unwrap_err();
        assert!(e.to_string().contains("is a server's lobby"), "{e}");
        drop(lobby);
        let e = Lobby::serve(&name, 0, 0o600).map(|_| ()).unwrap_err();
        assert!(e.to_string().contains("maxClients must be from 1"), "{e}");
    }
}
