//! The Node-API layer of sharmipc: a thin `#[napi]` wrapper around `sharm_core::Channel`.
//!
//! This is the binding the TypeScript facade (`lib/`) is built on; users call the facade.
//! Errors thrown from here are JS errors whose `code` is the core's stable code
//! (`sharm_core::Error::code`, e.g. `ERR_SHARM_BUSY`) and whose `message` is its text; the facade
//! turns them into its error classes by that code. The numbers the facade writes and reads (record
//! kinds, send results, the layout of `pollInto`'s output) are exported from here as constants, so
//! the TypeScript side never types them again.

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use napi::bindgen_prelude::{Buffer, Env, Function, Uint32ArraySlice, Uint8ArraySlice};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;
use sharm_core::{ArenaSink, Channel, ChannelOptions, Departure, Kind, PeerEvent, Waker};

pub mod lobby;
use lobby::NativeLobby;
mod loop_watch;
use loop_watch::LoopWatch;

/// An error for JS: `code` is the core's stable code, `message` its text.
type JsError = napi::Error<&'static str>;
type Result<T> = std::result::Result<T, JsError>;

fn js_err(e: sharm_core::Error) -> JsError {
    let code = e.code();
    match e {
        // The facade's RemoteError words it; the peer's message goes as it came.
        sharm_core::Error::Remote(m) => JsError::new(code, m),
        e => JsError::new(code, e.to_string()),
    }
}

fn invalid(msg: String) -> JsError {
    js_err(sharm_core::Error::Invalid(msg))
}

fn os(msg: String) -> JsError {
    js_err(sharm_core::Error::Os(msg))
}

/// Record kind of a request (the first argument of `send`, the low byte of a message's first
/// `pollInto` word).
#[napi]
pub const KIND_REQUEST: u32 = Kind::Request as u32;
/// Record kind of a successful answer.
#[napi]
pub const KIND_RESPONSE: u32 = Kind::Response as u32;
/// Record kind of a failed answer (payload: the UTF-8 error message).
#[napi]
pub const KIND_ERROR_RESPONSE: u32 = Kind::ErrorResponse as u32;
/// Record kind of a send-and-forget message.
#[napi]
pub const KIND_MESSAGE: u32 = Kind::Message as u32;
/// Record kind of a stream frame (the generation field carries the frame type).
#[napi]
pub const KIND_STREAM: u32 = Kind::Stream as u32;
/// Record kind of a cancel: the asker no longer waits for request `id` (no payload).
#[napi]
pub const KIND_CANCEL: u32 = Kind::Cancel as u32;
/// `send` result: the message is wholly in the ring.
#[napi]
pub const SEND_WRITTEN: u32 = 0;
/// `send` result: (part of) the message waits in the native queue.
#[napi]
pub const SEND_QUEUED: u32 = 1;
/// `send` result: the queue is over `maxQueueBytes`; nothing was taken.
#[napi]
pub const SEND_QUEUE_FULL: u32 = 2;
/// Bytes of a record header, also the header of each message in `sendStaged`'s input.
#[napi]
pub const RECORD_HEADER_BYTES: u32 = sharm_core::record::HEADER_LEN as u32;
/// Records (and messages in `sendStaged`'s input) start at multiples of this many bytes.
#[napi]
pub const RECORD_ALIGN: u32 = sharm_core::record::ALIGN as u32;
/// Words at the start of `pollInto`'s `meta`, before the four words of each message.
#[napi]
pub const POLL_META_HEAD: u32 = META_HEAD as u32;
/// `pollInto` head word: how many peer events the poll has (take them with `takeEvents()` and
/// apply them, in order, before its messages).
#[napi]
pub const POLL_WORD_EVENTS: u32 = 0;
/// `pollInto` head word: 1 if more is waiting (poll again).
#[napi]
pub const POLL_WORD_MORE: u32 = 1;
/// `pollInto` head word: the arena offset after the payloads written.
#[napi]
pub const POLL_WORD_ARENA_END: u32 = 2;
/// `pollInto` head words (low, high 32 bits): bytes queued natively for the ring.
#[napi]
pub const POLL_WORD_QUEUED: u32 = 3;
/// Length word of a message whose payload comes from `takeLarge()`.
#[napi]
pub const POLL_LARGE: u32 = sharm_core::LARGE;
/// Largest payload `pollInto` copies into the arena.
#[napi]
pub const POLL_INLINE_MAX: u32 = INLINE_MAX as u32;
/// `spin` result bit: there is something for `poll()` to do.
#[napi]
pub const SPIN_FOUND: u32 = 1;
/// `spin` result bit: no core of the machine is free, so spinning holds one another thread waits
/// for (see `sharm_core::Spin`).
#[napi]
pub const SPIN_CROWDED: u32 = 2;
/// `spin` result bit: since the last spin, a message of this side's rang the peer, which slept:
/// what it sends next comes after its wake-up.
#[napi]
pub const SPIN_PEER_WOKEN: u32 = 4;

/// Every `code` an error thrown by this binding can carry.
#[napi]
pub fn error_codes() -> Vec<&'static str> {
    sharm_core::Error::CODES.to_vec()
}

fn to_id(id: f64) -> Result<u64> {
    if !(id.is_finite() && id >= 0.0 && id.fract() == 0.0 && id <= 9_007_199_254_740_991.0) {
        return Err(invalid(format!(
            "message id must be a safe non-negative integer, got {id}"
        )));
    }
    Ok(id as u64)
}

fn to_kind(kind: u32) -> Result<Kind> {
    u8::try_from(kind)
        .ok()
        .and_then(Kind::from_u8)
        .filter(|k| k.is_sendable())
        .ok_or_else(|| {
            let kinds: Vec<String> = Kind::ALL
                .iter()
                .filter(|k| k.is_sendable())
                .map(|k| format!("{} ({k:?})", *k as u8))
                .collect();
            invalid(format!("kind must be one of {}, got {kind}", kinds.join(", ")))
        })
}

/// Options of `NativeChannel`; the facade validates and fills in defaults.
#[napi(object)]
pub struct NativeOptions {
    /// Ring bytes per direction (power of two, 4 KiB to 1 GiB).
    pub capacity: u32,
    /// Bytes accepted but not yet in the ring before sends are refused.
    pub max_queue_bytes: f64,
    /// Largest message accepted either way.
    pub max_message_bytes: f64,
    /// Microseconds the wake-up thread spins before it sleeps.
    pub spin_micros: u32,
    /// Access mode of the segment if this side creates it.
    pub mode: u32,
    /// Start no wake-up thread now: `startWaking()` does, once the event loop took the loop bell
    /// (a server's clients, which share one thread).
    pub defer_waking: Option<bool>,
}

type WakeFn = ThreadsafeFunction<(), (), (), Status, false>;

/// Makes a wake-up callback keep the event loop alive (`on`) or not. On the JS thread only.
fn set_tsfn_ref(env: &Env, w: &WakeFn, on: bool) -> Result<()> {
    // SAFETY: the threadsafe function is alive (the caller holds it) and this runs on the JS
    // thread.
    let status = unsafe {
        if on {
            napi::sys::napi_ref_threadsafe_function(env.raw(), w.raw())
        } else {
            napi::sys::napi_unref_threadsafe_function(env.raw(), w.raw())
        }
    };
    if status != napi::sys::Status::napi_ok {
        return Err(os(format!(
            "cannot change the ref state of a wake-up callback (status {status})"
        )));
    }
    Ok(())
}

/// A change of the peer, from `takeEvents()`.
#[napi(object)]
pub struct PeerChange {
    /// `true`: a peer attached; `false`: the peer left (the other fields say what it did not get).
    pub joined: bool,
    /// The peer's generation.
    pub generation: u32,
    /// The peer's process id (when it joined; 0 for a departure).
    pub pid: u32,
    #[napi(ts_type = "Buffer[]")]
    pub undelivered: Vec<Buffer>,
    #[napi(ts_type = "Buffer[]")]
    pub in_doubt: Vec<Buffer>,
    /// Messages not delivered whose bytes are gone (taken in part by the peer).
    pub partial: f64,
    /// Every request up to this id that still waits for an answer was meant for this peer.
    pub requests_through: f64,
    /// Of those, the ones that never reached it.
    pub requests_unsent: Vec<f64>,
    /// Of those, the ones its process had taken when it stopped (the rest reached its handler).
    pub requests_in_doubt: Vec<f64>,
}

fn change_of(ev: PeerEvent) -> PeerChange {
    match ev {
        PeerEvent::Joined { generation, pid } => PeerChange {
            joined: true,
            pid,
            ..change_left(Departure {
                generation,
                ..Default::default()
            })
        },
        PeerEvent::Left(d) => change_left(d),
    }
}

fn change_left(d: Departure) -> PeerChange {
    let ids = |v: Vec<u64>| v.into_iter().map(|id| id as f64).collect();
    let bufs = |v: Vec<Vec<u8>>| v.into_iter().map(Buffer::from).collect();
    PeerChange {
        joined: false,
        generation: d.generation,
        pid: 0,
        partial: d.partial as f64,
        requests_through: d.requests_through as f64,
        undelivered: bufs(d.undelivered),
        in_doubt: bufs(d.in_doubt),
        requests_unsent: ids(d.requests_unsent),
        requests_in_doubt: ids(d.requests_in_doubt),
    }
}

/// One side of a channel. Not for direct use: see `open()` in the facade.
#[napi]
pub struct NativeChannel {
    ch: Option<Channel>,
    /// Peer events of the last `pollInto`, until `takeEvents()`.
    events: Vec<PeerEvent>,
    thread: Option<JoinHandle<()>>,
    /// The waker, until `startWaking()` runs it (when waking was deferred).
    waker: Option<Waker>,
    wake: Option<Arc<WakeFn>>,
    referenced: bool,
    /// Payloads of messages too large for the arena, in order, until `takeLarge()`.
    large: VecDeque<Vec<u8>>,
    /// The event loop's watch on this side's loop bell, once `watchLoopBell()` started it.
    loop_watch: Option<LoopWatch>,
}

/// Words at the start of `pollInto`'s `meta`; the messages' entries follow.
const META_HEAD: usize = 8;
/// Largest payload `pollInto` copies into the arena; larger ones come from `takeLarge()`.
const INLINE_MAX: usize = 64 * 1024;

#[napi]
impl NativeChannel {
    /// Opens channel `name` and starts its wake-up thread, which calls `wake()` on the JS thread
    /// whenever `poll()` has something to do.
    #[napi(constructor)]
    pub fn new(name: String, options: NativeOptions, wake: Function<(), ()>) -> Result<Self> {
        if !(options.max_queue_bytes >= 0.0 && options.max_queue_bytes.is_finite()) {
            return Err(invalid(format!(
                "maxQueueBytes must be a non-negative number, got {}",
                options.max_queue_bytes
            )));
        }
        if !(options.max_message_bytes >= 1.0 && options.max_message_bytes <= u32::MAX as f64) {
            return Err(invalid(format!(
                "maxMessageBytes must be from 1 to 4294967295, got {}",
                options.max_message_bytes
            )));
        }
        let opts = ChannelOptions {
            capacity: options.capacity as usize,
            max_queue_bytes: options.max_queue_bytes as usize,
            max_message_bytes: options.max_message_bytes as usize,
            spin: Duration::from_micros(options.spin_micros as u64),
            mode: options.mode,
            loop_bell: true,
        };
        let ch = Channel::open(&name, opts).map_err(js_err)?;
        let tsfn = wake
            .build_threadsafe_function()
            .callee_handled::<false>()
            .build()
            .map_err(|e| os(format!("cannot create the wake-up callback: {e}")))?;
        let tsfn: Arc<WakeFn> = Arc::new(tsfn);
        let mut native = NativeChannel {
            waker: Some(ch.waker()),
            ch: Some(ch),
            events: Vec::new(),
            thread: None,
            wake: Some(tsfn),
            referenced: true,
            large: VecDeque::new(),
            loop_watch: None,
        };
        if options.defer_waking != Some(true) {
            native.start_waking(None)?;
        }
        Ok(native)
    }

    /// Starts the wake-up work deferred at construction: in the thread `server` shares among its
    /// clients if this channel is in loop mode (its event loop took its bell), else on a thread
    /// of its own. Does nothing the second time.
    #[napi]
    pub fn start_waking(&mut self, server: Option<&NativeLobby>) -> Result<()> {
        let (Some(waker), Some(tsfn)) = (self.waker.take(), self.wake.clone()) else {
            return Ok(());
        };
        let waker = match server.and_then(|s| s.waker_group()) {
            Some(group) => {
                let t = tsfn.clone();
                match group.add(
                    waker,
                    Box::new(move || {
                        t.call((), ThreadsafeFunctionCallMode::NonBlocking);
                    }),
                ) {
                    Ok(()) => return Ok(()),
                    Err(waker) => waker,
                }
            }
            None => waker,
        };
        let thread = std::thread::Builder::new()
            .name("sharmipc-wake".into())
            .spawn(move || {
                waker.run(|| {
                    tsfn.call((), ThreadsafeFunctionCallMode::NonBlocking);
                })
            })
            .map_err(|e| os(format!("cannot start the wake-up thread: {e}")))?;
        self.thread = Some(thread);
        Ok(())
    }

    fn ch(&mut self) -> Result<&mut Channel> {
        self.ch.as_mut().ok_or_else(|| js_err(sharm_core::Error::Closed))
    }

    /// Sends one message of `kind` (one of the `KIND_*` constants).
    /// Returns `SEND_WRITTEN`, `SEND_QUEUED`, or `SEND_QUEUE_FULL` (nothing was taken). Throws
    /// ERR_SHARM_TOO_LARGE, ERR_SHARM_CLOSED, ERR_SHARM_PROTOCOL.
    #[napi]
    pub fn send(&mut self, kind: u32, id: f64, gen: u32, data: Uint8ArraySlice) -> Result<u32> {
        let kind = to_kind(kind)?;
        let id = to_id(id)?;
        match self.ch()?.send(kind, id, gen as u16, &data) {
            Ok(sharm_core::SendOutcome::Written) => Ok(SEND_WRITTEN),
            Ok(sharm_core::SendOutcome::Queued) => Ok(SEND_QUEUED),
            Err(sharm_core::Error::QueueFull { .. }) => Ok(SEND_QUEUE_FULL),
            Err(e) => Err(js_err(e)),
        }
    }

    /// Sends the first `len` bytes of `stage`: messages encoded as `Channel::send_batch` takes
    /// them (the facade's send buffer). Returns the bytes then queued, not yet in the ring.
    #[napi]
    pub fn send_staged(&mut self, stage: Uint8ArraySlice, len: u32) -> Result<f64> {
        let len = len as usize;
        if len > stage.len() {
            return Err(invalid(format!(
                "sendStaged: len {len} is over the buffer's {} bytes",
                stage.len()
            )));
        }
        let ch = self.ch()?;
        ch.send_batch(&stage[..len]).map_err(js_err)?;
        Ok(ch.queued_bytes() as f64)
    }

    /// Takes what arrived into memory the caller owns, with no allocation per batch. `meta`:
    /// the first `POLL_META_HEAD` words are filled as the `POLL_WORD_*` constants say; then four
    /// words per message: `kind | gen << 16`, id low and high 32 bits, and the length
    /// (`POLL_LARGE`: take the payload from `takeLarge()`). Payloads are written back to back into `arena` from `used` on.
    /// Returns the number of messages. The caller keeps `arena.length - used` at least
    /// min(arena.length / 4, 64 KiB).
    #[napi]
    pub fn poll_into(&mut self, mut meta: Uint32ArraySlice, mut arena: Uint8ArraySlice, used: u32) -> Result<u32> {
        // SAFETY: both are views the JS thread passed in and cannot touch while this call runs.
        let (meta, arena) = unsafe { (meta.as_mut(), arena.as_mut()) };
        let used = used as usize;
        if meta.len() < META_HEAD + 4 || used > arena.len() {
            return Err(invalid(format!(
                "pollInto needs meta of at least {} words and used <= arena length, got {} words, used {} of {}",
                META_HEAD + 4,
                meta.len(),
                used,
                arena.len()
            )));
        }
        let inline_max = (arena.len() / 4).min(INLINE_MAX);
        let (head, entries) = meta.split_at_mut(META_HEAD);
        let ch = self.ch.as_mut().ok_or_else(|| js_err(sharm_core::Error::Closed))?;
        let mut sink = ArenaSink {
            meta: entries,
            arena,
            used,
            count: 0,
            inline_max,
            large: &mut self.large,
        };
        let info = ch.poll_into(&mut sink).map_err(js_err)?;
        let word = |w: u32| w as usize;
        self.events.extend(info.events);
        head[word(POLL_WORD_EVENTS)] = self.events.len() as u32;
        head[word(POLL_WORD_MORE)] = info.more as u32;
        head[word(POLL_WORD_ARENA_END)] = sink.used as u32;
        let queued = ch.queued_bytes() as u64;
        head[word(POLL_WORD_QUEUED)] = queued as u32;
        head[word(POLL_WORD_QUEUED) + 1] = (queued >> 32) as u32;
        Ok(sink.count as u32)
    }

    /// The peer events of the last `pollInto`, in order (apply them before its messages).
    #[napi]
    pub fn take_events(&mut self) -> Vec<PeerChange> {
        self.events.drain(..).map(change_of).collect()
    }

    /// Says that everything the last `pollInto` handed out was delivered: the peer may reuse the
    /// space and counts it as delivered. (Every `pollInto` says so of the one before.)
    #[napi]
    pub fn delivered(&mut self) -> Result<()> {
        self.ch()?.delivered();
        Ok(())
    }

    /// The payload of the next message `pollInto` marked as large.
    #[napi]
    pub fn take_large(&mut self) -> Result<Buffer> {
        match self.large.pop_front() {
            Some(v) => Ok(Buffer::from(v)),
            None => Err(invalid("takeLarge: no large message is waiting".into())),
        }
    }

    /// Sends request `id` and blocks until its answer, the peer's departure, or the timeout.
    #[napi]
    pub fn request_sync(&mut self, id: f64, data: Uint8ArraySlice, timeout_ms: f64) -> Result<Buffer> {
        let id = to_id(id)?;
        if !(timeout_ms > 0.0 && timeout_ms <= 2_147_483_647.0) {
            return Err(invalid(format!(
                "timeoutMs must be from 1 to 2147483647, got {timeout_ms}"
            )));
        }
        let v = self
            .ch()?
            .request_sync(id, &data, Duration::from_secs_f64(timeout_ms / 1000.0))
            .map_err(js_err)?;
        Ok(Buffer::from(v))
    }

    /// Busy-waits up to `micros` µs on this thread for something for `poll()` to do. Returns
    /// `SPIN_FOUND` if there is, `|` `SPIN_CROWDED` if no core of the machine is free, `|`
    /// `SPIN_PEER_WOKEN` if a message of this side's rang the sleeping peer since the last spin
    /// (see `sharm_core::Channel::spin`). Call `setDriving(true)` first.
    #[napi]
    pub fn spin(&mut self, micros: u32) -> Result<u32> {
        let spin = self.ch()?.spin(Duration::from_micros(micros as u64));
        Ok((u32::from(spin.found) * SPIN_FOUND)
            | (u32::from(spin.crowded) * SPIN_CROWDED)
            | (u32::from(spin.woke_peer) * SPIN_PEER_WOKEN))
    }

    /// Makes the event loop sleep on this side's bell (Linux): from now on the peer's ring calls
    /// `rung()` from the event loop itself (see `loop_watch.rs`) instead of the wake-up thread
    /// notifying it. Returns `false` where there is no bell (elsewhere, or not made) or when it is
    /// watched already.
    #[napi]
    pub fn watch_loop_bell(&mut self, env: &Env, rung: Function<(), ()>) -> Result<bool> {
        let Some(fd) = self.ch()?.take_loop_bell() else {
            return Ok(false);
        };
        self.loop_watch = Some(LoopWatch::start(env, fd, rung).map_err(|e| os(e.reason.clone()))?);
        Ok(true)
    }

    /// Latency mode on (`true`: this thread polls by itself, the wake-up thread rests) or off.
    #[napi]
    pub fn set_driving(&mut self, on: bool) -> Result<()> {
        self.ch()?.set_driving(on);
        Ok(())
    }

    /// Removes request `id` from the send queue if it has not started to go out.
    #[napi]
    pub fn cancel(&mut self, id: f64) -> Result<bool> {
        let id = to_id(id)?;
        Ok(self.ch()?.cancel(id))
    }

    /// Bytes accepted but not yet in the ring.
    #[napi(getter)]
    pub fn queued_bytes(&self) -> f64 {
        self.ch.as_ref().map_or(0.0, |c| c.queued_bytes() as f64)
    }

    /// Bytes we wrote into the ring that the peer has not released (delivered) yet.
    #[napi(getter)]
    pub fn unreleased_bytes(&self) -> f64 {
        self.ch.as_ref().map_or(0.0, |c| c.unreleased_bytes() as f64)
    }

    /// Is a peer attached now (one we write to, whose slot still says so)?
    #[napi(getter)]
    pub fn peer_connected(&self) -> bool {
        self.ch.as_ref().is_some_and(|c| c.peer_connected())
    }

    /// Ring capacity in bytes per direction.
    #[napi(getter)]
    pub fn capacity(&self) -> u32 {
        self.ch.as_ref().map_or(0, |c| c.capacity() as u32)
    }

    /// Side of the segment (0 or 1).
    #[napi(getter)]
    pub fn side(&self) -> u32 {
        self.ch.as_ref().map_or(0, |c| c.side() as u32)
    }

    /// This side's generation.
    #[napi(getter)]
    pub fn generation(&self) -> u32 {
        self.ch.as_ref().map_or(0, |c| c.generation())
    }

    /// Says so when opening freed a side whose process is not visible from here (it exited,
    /// or runs in another PID namespace); empty otherwise.
    #[napi(getter)]
    pub fn took_over_unseen(&self) -> String {
        self.ch
            .as_ref()
            .and_then(|c| c.took_over_unseen())
            .unwrap_or_default()
            .to_string()
    }

    /// OS name of the shared-memory segment.
    #[napi(getter)]
    pub fn segment_name(&self) -> String {
        self.ch.as_ref().map_or(String::new(), |c| c.os_id().to_string())
    }

    /// Keep the event loop alive while open (the default).
    #[napi(js_name = "ref")]
    pub fn refer(&mut self, env: &Env) -> Result<()> {
        self.set_ref(env, true)
    }

    /// Let the event loop exit although the channel is open.
    #[napi]
    pub fn unref(&mut self, env: &Env) -> Result<()> {
        self.set_ref(env, false)
    }

    fn set_ref(&mut self, env: &Env, on: bool) -> Result<()> {
        let Some(w) = &self.wake else { return Ok(()) };
        if self.referenced == on {
            return Ok(());
        }
        set_tsfn_ref(env, w, on)?;
        self.referenced = on;
        Ok(())
    }

    /// Leaves the channel: stops and joins the wake-up thread, frees this side, removes the
    /// segment if the peer is gone too. Returns what of ours was not confirmed as delivered:
    /// departures not taken by `takeEvents()` yet, the queue, and what an attached peer has not
    /// released (in doubt). Idempotent (later calls report nothing).
    #[napi]
    pub fn close(&mut self) -> PeerChange {
        let mut report = Departure::default();
        for ev in self.events.drain(..) {
            if let PeerEvent::Left(d) = ev {
                report.absorb(d);
            }
        }
        if let Some(ch) = self.ch.as_mut() {
            report.absorb(ch.leave());
        }
        self.shut();
        change_left(report)
    }

    fn shut(&mut self) {
        // Dropping the watch closes it.
        self.loop_watch = None;
        self.waker = None;
        if let Some(ch) = self.ch.as_mut() {
            ch.close();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.ch = None;
        self.wake = None;
    }
}

impl Drop for NativeChannel {
    fn drop(&mut self) {
        self.shut();
    }
}

/// One side of a segment, from `inspectSegment`/`listSegments`.
#[napi(object)]
pub struct SegmentSide {
    pub pid: u32,
    /// `free`, `attaching`, `ready`, `broken`, or `unknown(<n>)`.
    pub state: String,
    pub generation: u32,
    /// The side's bit is set in the attach word.
    pub held: bool,
    /// The process in the slot is alive (same pid and start time).
    pub alive: bool,
    /// A process with that pid is visible from here at all.
    pub pid_visible: bool,
    /// The pid belongs here to a process that started before the recorded one: the recorded
    /// process runs in another PID namespace.
    pub other_namespace: bool,
}

/// One ring's control block, from `inspectSegment`/`listSegments`.
#[napi(object)]
pub struct SegmentRing {
    /// The side that writes into it.
    pub from_side: u32,
    pub write: f64,
    pub read: f64,
    pub handed: f64,
    /// Bytes written and not yet released by the reader.
    pub fill: f64,
    pub reader_asleep: bool,
    pub writer_waiting: bool,
}

/// A segment seen from outside, without attaching (see `sharm_core::inspect`).
#[napi(object)]
pub struct SegmentInfo {
    /// The channel name, when the file name holds it (long names are hashed).
    pub name: Option<String>,
    pub os_id: String,
    pub path: String,
    pub bytes: f64,
    /// It starts with sharmipc's magic bytes (of any version).
    pub is_sharmipc: bool,
    /// A server's lobby (serve() and connect()), whose places are not sides.
    pub lobby: bool,
    /// A sharmipc segment of this layout and protocol version.
    pub magic_ok: bool,
    pub layout_version: u32,
    pub protocol_version: u32,
    pub capacity: f64,
    pub init_state: String,
    pub attach: u32,
    /// The attach word's bits: `side0`, `side1`, `dead`.
    pub flags: Vec<String>,
    pub creator_pid: u32,
    pub sides: Vec<SegmentSide>,
    /// Empty when the segment is too short or not readable as one of ours.
    pub rings: Vec<SegmentRing>,
    pub age_ms: Option<f64>,
    pub uid: u32,
    pub mode: u32,
    /// A live process holds a side (of a lobby: the server's place, or a client's).
    pub live: bool,
    /// A lobby's server and clients; absent for a channel.
    pub lobby_summary: Option<LobbySummary>,
}

/// A lobby's server and clients, in [`SegmentInfo`].
#[napi(object)]
pub struct LobbySummary {
    /// Its server's pid; 0: no server holds it.
    pub server_pid: u32,
    pub server_alive: bool,
    /// Places held by clients, and how many of those clients are alive.
    pub clients: u32,
    pub clients_alive: u32,
}

impl From<sharm_core::inspect::SegmentInfo> for SegmentInfo {
    fn from(i: sharm_core::inspect::SegmentInfo) -> Self {
        let live = i.live();
        SegmentInfo {
            name: i.name,
            os_id: i.os_id,
            path: i.path,
            bytes: i.bytes as f64,
            is_sharmipc: i.is_sharmipc,
            lobby: i.lobby,
            magic_ok: i.magic_ok,
            layout_version: i.layout_version,
            protocol_version: i.protocol_version,
            capacity: i.capacity as f64,
            init_state: i.init_state,
            attach: i.attach,
            flags: i.flags,
            creator_pid: i.creator_pid,
            sides: i
                .sides
                .into_iter()
                .map(|s| SegmentSide {
                    pid: s.pid,
                    state: s.state,
                    generation: s.generation,
                    held: s.held,
                    alive: s.alive,
                    pid_visible: s.pid_visible,
                    other_namespace: s.other_namespace,
                })
                .collect(),
            rings: i
                .rings
                .into_iter()
                .map(|r| SegmentRing {
                    from_side: r.from_side,
                    write: r.write as f64,
                    read: r.read as f64,
                    handed: r.handed as f64,
                    fill: r.fill as f64,
                    reader_asleep: r.reader_asleep,
                    writer_waiting: r.writer_waiting,
                })
                .collect(),
            age_ms: i.age_ms,
            uid: i.uid,
            mode: i.mode,
            live,
            lobby_summary: i.lobby_summary.map(|l| LobbySummary {
                server_pid: l.server_pid,
                server_alive: l.server_alive,
                clients: l.clients,
                clients_alive: l.clients_alive,
            }),
        }
    }
}

/// Every channel segment on this machine that this user can read (Linux).
#[napi]
pub fn list_segments() -> Result<Vec<SegmentInfo>> {
    Ok(sharm_core::inspect::list()
        .map_err(js_err)?
        .into_iter()
        .map(Into::into)
        .collect())
}

/// The segment of channel `name` (or an OS name such as `/sharm.x`), read without attaching;
/// `null` if there is none.
#[napi]
pub fn inspect_segment(name: String) -> Result<Option<SegmentInfo>> {
    Ok(sharm_core::inspect::inspect(&name).map_err(js_err)?.map(Into::into))
}

/// Removes the segment of channel `name` (or an OS name) unless a live process holds a side:
/// `"removed"`, `"live: <pids>"`, `"busy"` (being created or removed right now), or
/// `"foreign: <what>"` (not a segment of this version: left alone).
#[napi]
pub fn clean_segment(name: String) -> Result<String> {
    use sharm_core::inspect::Cleaned;
    Ok(match sharm_core::inspect::clean(&name).map_err(js_err)? {
        Cleaned::Removed => "removed".to_string(),
        Cleaned::Live(who) => format!("live: {who}"),
        Cleaned::Busy => "busy".to_string(),
        Cleaned::Foreign(what) => format!("foreign: {what}"),
    })
}
