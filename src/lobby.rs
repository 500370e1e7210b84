//! The Node-API side of a server's lobby (`sharm_core::lobby`): a server's hold on it, with the
//! one thread that watches it for the server, and a client's place in it.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use napi::bindgen_prelude::{Env, Function};
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi_derive::napi;
use sharm_core::lobby::{Client, Lobby, Role};
use sharm_core::WakerGroup;

use crate::{invalid, js_err, os, Result, WakeFn};

/// How often the watch thread looks whether its clients' processes are alive, between rings.
const LIVENESS_EVERY: Duration = Duration::from_millis(250);
/// The longest the watch thread sleeps on the lobby's doorbell.
const NAP: Duration = Duration::from_millis(100);

/// The most clients a server takes (`maxClients` is from 1 to this).
#[napi]
pub const MAX_CLIENTS: u32 = sharm_core::lobby::MAX_CLIENTS as u32;

/// A client's place, from `clients()`.
#[napi(object)]
pub struct LobbyClient {
    /// Its place in the lobby.
    pub index: u32,
    /// Its ticket: a place taken again has a new one.
    pub ticket: u32,
    pub pid: u32,
    /// Its process is alive.
    pub alive: bool,
    /// The name of its channel with the server.
    pub channel: String,
}

/// A hold on a server's lobby: the server's, or a client's place.
#[napi]
pub struct NativeLobby {
    lobby: Option<Arc<Lobby>>,
    /// A server's: the one thread that does the wake-up work of its clients' channels.
    group: Option<WakerGroup>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    wake: Option<Arc<WakeFn>>,
    referenced: bool,
}

fn max_clients(n: f64) -> Result<u32> {
    if n.fract() != 0.0 || !(1.0..=sharm_core::lobby::MAX_CLIENTS as f64).contains(&n) {
        return Err(invalid(format!(
            "maxClients must be an integer from 1 to {}, got {n}",
            sharm_core::lobby::MAX_CLIENTS
        )));
    }
    Ok(n as u32)
}

#[napi]
impl NativeLobby {
    /// Takes the server's place in the lobby of `name` and starts the thread that calls
    /// `changed()` when a client takes or leaves a place, or its process died.
    #[napi(factory)]
    pub fn serve(name: String, max: f64, mode: u32, changed: Function<(), ()>) -> Result<Self> {
        // Made first: a server whose thread could not start must not keep its place.
        let group = WakerGroup::start("sharmipc-clients").map_err(js_err)?;
        let lobby = Arc::new(Lobby::serve(&name, max_clients(max)?, mode).map_err(js_err)?);
        let tsfn = changed
            .build_threadsafe_function()
            .callee_handled::<false>()
            .build()
            .map_err(|e| os(format!("cannot create the lobby's callback: {e}")))?;
        let tsfn: Arc<WakeFn> = Arc::new(tsfn);
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s, t) = (lobby.clone(), stop.clone(), tsfn.clone());
        let thread = std::thread::Builder::new()
            .name("sharmipc-lobby".into())
            .spawn(move || {
                watch(&l, &s, || {
                    t.call((), ThreadsafeFunctionCallMode::NonBlocking);
                })
            })
            .map_err(|e| os(format!("cannot start the lobby's thread: {e}")))?;
        Ok(NativeLobby {
            lobby: Some(lobby),
            group: Some(group),
            stop,
            thread: Some(thread),
            wake: Some(tsfn),
            referenced: true,
        })
    }

    /// Takes a client's place in the lobby of `name` (its channel: `channelName`); the server sees
    /// it after `ready()`, once the channel is made.
    #[napi(factory)]
    pub fn join(name: String, mode: u32) -> Result<Self> {
        let lobby = Lobby::join(&name, mode).map_err(js_err)?;
        Ok(NativeLobby {
            lobby: Some(Arc::new(lobby)),
            group: None,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
            wake: None,
            referenced: false,
        })
    }

    /// A client's channel is made: the server may see the client now (a client's hold only).
    #[napi]
    pub fn ready(&self) -> Result<()> {
        self.lobby()?.ready();
        Ok(())
    }

    /// The thread a server's clients' channels share (none for a client, or once closed).
    pub(crate) fn waker_group(&self) -> Option<&WakerGroup> {
        self.group.as_ref()
    }

    /// How many clients' channels the server's shared wake-up thread watches.
    #[napi(getter)]
    pub fn watched_channels(&self) -> u32 {
        self.group.as_ref().map_or(0, |g| g.len() as u32)
    }

    fn lobby(&self) -> Result<&Lobby> {
        self.lobby.as_deref().ok_or_else(|| js_err(sharm_core::Error::Closed))
    }

    /// A client's channel with the server ("" for the server's hold).
    #[napi(getter)]
    pub fn channel_name(&self) -> Result<String> {
        let l = self.lobby()?;
        Ok(match l.role() {
            Role::Client { index, ticket } => l.channel_name(index, ticket),
            Role::Server => String::new(),
        })
    }

    /// Access mode of the lobby segment (Unix; none where it cannot be read).
    #[napi(getter)]
    pub fn mode(&self) -> Result<Option<u32>> {
        Ok(self.lobby()?.mode())
    }

    /// OS name of the lobby segment.
    #[napi(getter)]
    pub fn segment_name(&self) -> Result<String> {
        Ok(self.lobby()?.os_id().to_string())
    }

    /// The clients' places that are taken, in place order.
    #[napi]
    pub fn clients(&self) -> Result<Vec<LobbyClient>> {
        let l = self.lobby()?;
        Ok(l.clients()
            .into_iter()
            .map(|c| LobbyClient {
                index: c.index,
                ticket: c.ticket,
                pid: c.pid,
                alive: c.alive,
                channel: l.channel_name(c.index, c.ticket),
            })
            .collect())
    }

    /// Frees the place of a client whose process died (once its channel is closed).
    #[napi]
    pub fn free_dead(&self, index: u32, ticket: u32) -> Result<bool> {
        Ok(self.lobby()?.free_dead(index, ticket))
    }

    /// Keep the event loop alive while serving (the default for a server).
    #[napi(js_name = "ref")]
    pub fn refer(&mut self, env: &Env) -> Result<()> {
        self.set_ref(env, true)
    }

    /// Let the event loop exit although the server is open.
    #[napi]
    pub fn unref(&mut self, env: &Env) -> Result<()> {
        self.set_ref(env, false)
    }

    fn set_ref(&mut self, env: &Env, on: bool) -> Result<()> {
        let Some(w) = &self.wake else { return Ok(()) };
        if self.referenced == on {
            return Ok(());
        }
        crate::set_tsfn_ref(env, w, on)?;
        self.referenced = on;
        Ok(())
    }

    /// Gives up the place (the server's, or the client's) and stops the watch thread; removes
    /// the lobby if nobody holds a place any more. Idempotent.
    #[napi]
    pub fn close(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(l) = &self.lobby {
            l.ring();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.wake = None;
        self.group = None;
        if let Some(l) = self.lobby.take() {
            // The thread is joined: this is the one reference.
            if let Ok(mut l) = Arc::try_unwrap(l) {
                l.leave();
            }
        }
    }
}

impl Drop for NativeLobby {
    fn drop(&mut self) {
        self.close();
    }
}

/// The watch thread of a server: `changed()` whenever a client rang (took or left a place) or
/// what it sees of the clients' places changed, including a process found dead. It also frees the
/// places of clients that died before they were ready (they have no channel).
fn watch(lobby: &Lobby, stop: &AtomicBool, changed: impl Fn()) {
    let mut seen: Vec<Client> = lobby.clients();
    let mut looked = Instant::now();
    while !stop.load(SeqCst) {
        let rung = lobby.wait(NAP);
        if stop.load(SeqCst) {
            break;
        }
        if !rung && looked.elapsed() < LIVENESS_EVERY {
            continue;
        }
        looked = Instant::now();
        lobby.free_dead_unready();
        let now = lobby.clients();
        if rung || now != seen {
            seen = now;
            changed();
        }
    }
}
