//! The Node-API layer of sharmipc: a thin `#[napi]` wrapper around `sharm_core::Channel`.
//!
//! This is the binding the TypeScript facade (`index.ts`) is built on; users call the facade.
//! Errors thrown from here carry a message of the form `ERR_SHARM_<CODE>: <text>`, which the facade
//! turns into its error classes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use sharm_core::{ArenaSink, Channel, ChannelOptions, Kind};

fn js_err(e: sharm_core::Error) -> Error {
    Error::from_reason(format!("{}: {}", e.code(), e))
}

fn invalid(msg: String) -> Error {
    Error::from_reason(format!("ERR_SHARM_INVALID: {msg}"))
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
    match kind {
        1 => Ok(Kind::Request),
        2 => Ok(Kind::Response),
        3 => Ok(Kind::ErrorResponse),
        4 => Ok(Kind::Message),
        7 => Ok(Kind::Stream),
        _ => Err(invalid(format!(
            "kind must be 1 (request), 2 (response), 3 (error), 4 (message) or 7 (stream), got {kind}"
        ))),
    }
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
}

type WakeFn = ThreadsafeFunction<(), (), (), Status, false>;

/// One side of a channel. Not for direct use: see `open()` in the facade.
#[napi]
pub struct NativeChannel {
    ch: Option<Channel>,
    thread: Option<JoinHandle<()>>,
    wake: Option<Arc<WakeFn>>,
    referenced: bool,
    /// Payloads of messages too large for the arena, in order, until `takeLarge()`.
    large: VecDeque<Vec<u8>>,
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
        };
        let ch = Channel::open(&name, opts).map_err(js_err)?;
        let tsfn: Arc<WakeFn> = Arc::new(wake.build_threadsafe_function().callee_handled::<false>().build()?);
        let waker = ch.waker();
        let thread_tsfn = tsfn.clone();
        let thread = std::thread::Builder::new()
            .name("sharmipc-wake".into())
            .spawn(move || {
                waker.run(|| {
                    thread_tsfn.call((), ThreadsafeFunctionCallMode::NonBlocking);
                })
            })
            .map_err(|e| Error::from_reason(format!("ERR_SHARM_OS: cannot start the wake-up thread: {e}")))?;
        Ok(NativeChannel {
            ch: Some(ch),
            thread: Some(thread),
            wake: Some(tsfn),
            referenced: true,
            large: VecDeque::new(),
        })
    }

    fn ch(&mut self) -> Result<&mut Channel> {
        self.ch.as_mut().ok_or_else(|| js_err(sharm_core::Error::Closed))
    }

    /// Sends one message of `kind` (1 request, 2 response, 3 error, 4 message). Returns 0 when it
    /// is wholly in the ring, 1 when (part of) it is queued, 2 when the queue is full and nothing
    /// was taken. Throws ERR_SHARM_TOO_LARGE, ERR_SHARM_CLOSED, ERR_SHARM_PROTOCOL.
    #[napi]
    pub fn send(&mut self, kind: u32, id: f64, gen: u32, data: Uint8ArraySlice) -> Result<u32> {
        let kind = to_kind(kind)?;
        let id = to_id(id)?;
        match self.ch()?.send(kind, id, gen as u16, &data) {
            Ok(sharm_core::SendOutcome::Written) => Ok(0),
            Ok(sharm_core::SendOutcome::Queued) => Ok(1),
            Err(sharm_core::Error::QueueFull { .. }) => Ok(2),
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
    /// words 0..8 are filled with: peer events (bit 1 the peer left, bit 2 a peer attached),
    /// the attached peer's generation, the unconfirmed count (low, high 32 bits), 1 if more is
    /// waiting, the arena offset after the payloads, and the bytes queued for the ring (low, high
    /// 32 bits); then four words per message:
    /// `kind | gen << 16`, id low and high 32 bits, and the length (0xffffffff: take the payload
    /// from `takeLarge()`). Payloads are written back to back into `arena` from `used` on.
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
        let e = info.events;
        head[0] = (e.disconnected as u32) | (e.connected as u32) << 1;
        head[1] = e.generation;
        head[2] = e.unconfirmed as u32;
        head[3] = (e.unconfirmed >> 32) as u32;
        head[4] = info.more as u32;
        head[5] = sink.used as u32;
        let queued = ch.queued_bytes() as u64;
        head[6] = queued as u32;
        head[7] = (queued >> 32) as u32;
        Ok(sink.count as u32)
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

    /// Latency mode: busy-waits up to `micros` µs on this thread for something for `poll()` to do
    /// and says whether there is. Call `setDriving(true)` first.
    #[napi]
    pub fn spin(&mut self, micros: u32) -> Result<bool> {
        Ok(self.ch()?.spin_for_work(Duration::from_micros(micros as u64)))
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

    /// Is a peer attached (as of the last poll)?
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
        // SAFETY: the threadsafe function is alive (we hold it) and this runs on the JS thread.
        let status = unsafe {
            if on {
                napi::sys::napi_ref_threadsafe_function(env.raw(), w.raw())
            } else {
                napi::sys::napi_unref_threadsafe_function(env.raw(), w.raw())
            }
        };
        if status != napi::sys::Status::napi_ok {
            return Err(Error::from_reason(format!(
                "ERR_SHARM_OS: cannot change the channel's ref state (status {status})"
            )));
        }
        self.referenced = on;
        Ok(())
    }

    /// Leaves the channel: stops and joins the wake-up thread, frees this side, removes the
    /// segment if the peer is gone too. Idempotent.
    #[napi]
    pub fn close(&mut self) {
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
        self.close();
    }
}
