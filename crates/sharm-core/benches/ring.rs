//! Native ceiling of the ring and the channel, without Node.js.
//!
//!   cargo bench -p sharm-core --bench ring [-- FILTER]
//!
//! Every ring lives in named shared memory (1 MiB per direction, the channel default), and every
//! message is copied out by its reader, as a real reader must before the space is reused.
//!
//! - `ring-1-thread/SIZE`: one thread pushes, publishes, peeks, copies out and releases one record.
//! - `ring-2-threads/SIZE`: a producer thread and a consumer thread over one ring (SPSC); the
//!   producer publishes every record, the consumer releases when it has caught up or has read a
//!   quarter of the ring, as `Channel` does.
//! - `channel-2-threads/1MiB`: a message over a record's limit is chunked, so it goes through two
//!   `Channel`s (one per thread) on one segment, both busy-polling.
//! - `channel-2-processes/send/SIZE`: send-and-forget from this process to a second one (this
//!   binary run again); a sample ends when the peer answers a request sent after the messages.
//! - `channel-2-processes/round-trip/1`: a request and its answer, one at a time, both sides
//!   busy-polling (`spin_for_work` then `poll`): the latency floor.

use std::hint::black_box;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use sharm_core::layout::RING_CONTROL_BYTES;
use sharm_core::record::RecordHeader;
use sharm_core::ring::{Consumer, Producer, RingMem};
use sharm_core::segment::{os_id_for, Created, Opened, Segment};
use sharm_core::{Batch, Channel, ChannelOptions, Kind, Payload, SendOutcome};

/// Set in the environment of the peer process: the channel name to open.
const PEER_ENV: &str = "SHARM_BENCH_PEER";
/// Ring bytes per direction (the channel default).
const CAPACITY: usize = 1 << 20;
const MIB: usize = 1 << 20;
/// Longest wait for the peer before a bench gives up (a stuck peer must not hang the run).
const PATIENCE: Duration = Duration::from_secs(30);
/// How long a channel side busy-polls with nothing to do before it yields its core once.
const SPIN: Duration = Duration::from_micros(50);
/// Idle spins of a ring end before it yields its core once.
const SPINS_BEFORE_YIELD: u32 = 1024;

fn main() {
    if let Ok(name) = std::env::var(PEER_ENV) {
        run_peer(&name);
        return;
    }
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    ring_one_thread(&mut c);
    ring_two_threads(&mut c);
    channel_two_threads(&mut c);
    channel_two_processes(&mut c);
    c.final_summary();
}

/// A channel name unique to this process and call.
fn unique_name(what: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "bench-{}-{what}{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn throughput(size: usize) -> Throughput {
    Throughput::ElementsAndBytes {
        elements: 1,
        bytes: size as u64,
    }
}

fn size_label(size: usize) -> String {
    if size >= MIB {
        format!("{}MiB", size / MIB)
    } else {
        size.to_string()
    }
}

fn body(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

fn header(id: u64) -> RecordHeader {
    RecordHeader {
        len: 0,
        kind: Kind::Message,
        flags: 0,
        gen: 0,
        id,
    }
}

/// Busy-waiting that yields the core after a while with nothing to do, so that two sides on one
/// core (the machine may be busy) still take turns instead of each spinning for a whole time slice.
struct Backoff(u32);

impl Backoff {
    fn snooze(&mut self) {
        if self.0 < SPINS_BEFORE_YIELD {
            self.0 += 1;
            std::hint::spin_loop();
        } else {
            self.0 = 0;
            std::thread::yield_now();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The ring alone
// ---------------------------------------------------------------------------------------------

/// One ring in a segment of its own, removed when this is dropped (also while unwinding).
struct ShmRing {
    seg: Segment,
}

impl ShmRing {
    fn new() -> ShmRing {
        let os_id = os_id_for(&unique_name("ring")).unwrap();
        match Segment::create(&os_id, RING_CONTROL_BYTES + CAPACITY).unwrap() {
            Created::New(mut seg) => {
                seg.unlink_on_drop();
                ShmRing { seg }
            }
            Created::Exists => panic!("shared memory {os_id} already exists"),
        }
    }

    /// The ring's one producer and one consumer.
    fn ends(&self) -> (Producer, Consumer) {
        // SAFETY: the segment is page-aligned, RING_CONTROL_BYTES + CAPACITY long, zero-filled
        // (a valid empty ring) and outlives every Producer/Consumer made here (they are dropped
        // before `self` in each bench). Each bench calls this once per ring: one RingMem becomes
        // the producer, the other the consumer.
        let (p, c) = unsafe {
            (
                RingMem::new(self.seg.as_ptr(), CAPACITY),
                RingMem::new(self.seg.as_ptr(), CAPACITY),
            )
        };
        (Producer::new(p), Consumer::new(c, false))
    }
}

fn ring_one_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring-1-thread");
    for size in [1, 512, 10_000] {
        // One ring per size, kept across samples (criterion calls the closure once per sample).
        let ring = ShmRing::new();
        let (mut prod, mut cons) = ring.ends();
        let body = body(size);
        let mut out = vec![0u8; size];
        let mut id = 0u64;
        g.throughput(throughput(size));
        g.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter(|| {
                id += 1;
                assert!(prod.try_push(header(id), &[], black_box(&body)).unwrap());
                prod.publish();
                let r = cons.peek().unwrap().expect("the record just published");
                out.copy_from_slice(cons.payload(&r));
                cons.consume(&r);
                cons.release();
                black_box(&out);
            });
        });
    }
    g.finish();
}

/// Reads `n` records, copying each out; releases as `Channel::drain` does.
fn consume_n(c: &mut Consumer, n: u64, out: &mut [u8]) {
    let release_every = (CAPACITY / 4) as u64;
    let mut last_release = c.read_index();
    let mut got = 0;
    let mut idle = Backoff(0);
    while got < n {
        match c.peek().unwrap() {
            Some(r) => {
                idle.0 = 0;
                let v = c.payload(&r);
                out[..v.len()].copy_from_slice(v);
                c.consume(&r);
                got += 1;
                if c.read_index() - last_release >= release_every {
                    last_release = c.read_index();
                    c.release();
                }
            }
            None => {
                if c.read_index() != last_release {
                    last_release = c.read_index();
                    c.release();
                }
                idle.snooze();
            }
        }
    }
    c.release();
    black_box(&out);
}

fn ring_two_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring-2-threads");
    for size in [1, 512, 10_000] {
        let ring = ShmRing::new();
        let (mut prod, mut cons) = ring.ends();
        let body = body(size);
        let mut out = vec![0u8; size];
        g.throughput(throughput(size));
        g.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter_custom(|iters| {
                let start = Barrier::new(2);
                std::thread::scope(|s| {
                    let (prod, body, start) = (&mut prod, &body, &start);
                    s.spawn(move || {
                        start.wait();
                        let mut full = Backoff(0);
                        for id in 0..iters {
                            while !prod.try_push(header(id), &[], body).unwrap() {
                                full.snooze();
                            }
                            prod.publish();
                        }
                    });
                    start.wait();
                    let t0 = Instant::now();
                    consume_n(&mut cons, iters, &mut out);
                    t0.elapsed()
                })
            });
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// Channels
// ---------------------------------------------------------------------------------------------

fn bytes_of<'a>(b: &'a Batch, p: &'a Payload) -> &'a [u8] {
    match p {
        Payload::Inline { offset, len } => &b.data[*offset..offset + len],
        Payload::Owned(v) => v,
    }
}

/// Did the peer leave (a departure among the batch's events)?
fn left(b: &sharm_core::Batch) -> bool {
    b.events.iter().any(|e| matches!(e, sharm_core::PeerEvent::Left(_)))
}

/// Sends a message; if part of it had to wait in the queue, busy-polls until it is all in the
/// ring, so the queue never holds more than one message.
fn send_all(ch: &mut Channel, kind: Kind, id: u64, data: &[u8]) {
    if ch.send(kind, id, 0, data).unwrap() == SendOutcome::Queued {
        let t0 = Instant::now();
        while ch.queued_bytes() > 0 {
            if !ch.spin_for_work(SPIN) {
                std::thread::yield_now();
            }
            let b = ch.poll().unwrap();
            assert!(!left(&b), "the peer left");
            assert!(t0.elapsed() < PATIENCE, "the peer stopped reading");
        }
    }
}

/// Busy-polls until the answer to request `id` arrives.
fn await_answer(ch: &mut Channel, id: u64) {
    let t0 = Instant::now();
    loop {
        if ch.spin_for_work(SPIN) {
            let b = ch.poll().unwrap();
            assert!(!left(&b), "the peer left");
            if b.messages.iter().any(|m| m.kind == Kind::Response && m.id == id) {
                return;
            }
        } else {
            std::thread::yield_now();
        }
        assert!(t0.elapsed() < PATIENCE, "no answer to request {id}");
    }
}

/// Opens a channel, busy-polling (no wake-up thread).
fn open(name: &str) -> Channel {
    let ch = Channel::open(name, ChannelOptions::default()).unwrap();
    ch.set_driving(true);
    ch
}

fn channel_two_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("channel-2-threads");
    let size = MIB;
    // Both sides close when dropped; the last one out removes the segment.
    let name = unique_name("ch");
    let mut tx = open(&name);
    let mut rx = open(&name);
    tx.poll().unwrap();
    rx.poll().unwrap();
    assert!(tx.peer_connected() && rx.peer_connected());
    let body = body(size);
    g.throughput(throughput(size));
    g.bench_function(BenchmarkId::from_parameter(size_label(size)), |b| {
        b.iter_custom(|iters| {
            let start = Barrier::new(2);
            std::thread::scope(|s| {
                let (tx, body, start) = (&mut tx, &body, &start);
                s.spawn(move || {
                    start.wait();
                    for id in 0..iters {
                        send_all(tx, Kind::Message, id, body);
                    }
                });
                start.wait();
                let t0 = Instant::now();
                let mut got = 0;
                while got < iters {
                    if rx.spin_for_work(SPIN) {
                        let b = rx.poll().unwrap();
                        for m in &b.messages {
                            assert_eq!(bytes_of(&b, &m.payload).len(), size);
                        }
                        got += b.messages.len() as u64;
                    } else {
                        std::thread::yield_now();
                    }
                    assert!(t0.elapsed() < PATIENCE, "messages lost");
                }
                t0.elapsed()
            })
        });
    });
    g.finish();
}

/// The second process: this binary again, with [`PEER_ENV`] set. Answers every request with its
/// payload, busy-polling, until the bench process leaves or closes our stdin (by exiting).
///
/// It runs in a process group of its own, so an interrupted bench (Ctrl-C) does not take it down
/// at once: it sees its stdin close when the bench process dies, and removes the segment.
fn run_peer(name: &str) {
    let orphaned = Arc::new(AtomicBool::new(false));
    let flag = orphaned.clone();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        flag.store(true, Ordering::SeqCst);
    });
    let mut ch = open(name);
    while !orphaned.load(Ordering::Relaxed) {
        if !ch.spin_for_work(SPIN) {
            std::thread::yield_now();
            continue;
        }
        let b = ch.poll().unwrap();
        if left(&b) {
            break;
        }
        for m in &b.messages {
            if m.kind == Kind::Request {
                let data = bytes_of(&b, &m.payload);
                ch.send(Kind::Response, m.id, m.gen, data).unwrap();
            }
        }
    }
    let os_id = ch.os_id().to_string();
    ch.close();
    drop(ch);
    if orphaned.load(Ordering::SeqCst) {
        // The bench process may not be reaped yet, and then counts as attached: the name is
        // ours alone, so remove it regardless.
        if let Ok(Opened::Mapped(mut seg)) = Segment::open(&os_id) {
            let _ = seg.unlink();
        }
    }
}

/// The bench side of a two-process channel. Dropping it (also while unwinding from a panic)
/// kills the peer, then closes the channel: with the peer dead, the close removes the segment.
struct Peer {
    child: Child,
    ch: Option<Channel>,
    next_id: u64,
}

impl Peer {
    fn spawn() -> Peer {
        let name = unique_name("proc");
        // Create the channel first, so the peer joins it and we own its removal.
        let ch = open(&name);
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.env(PEER_ENV, &name).stdin(Stdio::piped()).stdout(Stdio::null());
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().unwrap();
        let mut peer = Peer {
            child,
            ch: Some(ch),
            next_id: 0,
        };
        let t0 = Instant::now();
        while !peer.ch().peer_connected() {
            peer.ch().poll().unwrap();
            if let Some(status) = peer.child.try_wait().unwrap() {
                panic!("the peer process exited before it attached: {status}");
            }
            assert!(t0.elapsed() < PATIENCE, "the peer process did not attach");
            std::thread::sleep(Duration::from_millis(1));
        }
        peer
    }

    fn ch(&mut self) -> &mut Channel {
        self.ch.as_mut().unwrap()
    }

    /// Sends a request and busy-polls until its answer is back.
    fn round_trip(&mut self, data: &[u8]) {
        self.next_id += 1;
        let id = self.next_id;
        send_all(self.ch(), Kind::Request, id, data);
        await_answer(self.ch(), id);
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(mut ch) = self.ch.take() {
            let os_id = ch.os_id().to_string();
            ch.close();
            drop(ch);
            let path = format!("/dev/shm{os_id}");
            if cfg!(target_os = "linux") && std::path::Path::new(&path).exists() {
                eprintln!("warning: {path} was left behind");
            }
        }
    }
}

fn channel_two_processes(c: &mut Criterion) {
    let mut g = c.benchmark_group("channel-2-processes");
    let mut peer = Peer::spawn();
    for size in [1, 512, 10_000, MIB] {
        g.throughput(throughput(size));
        let body = body(size);
        g.bench_function(BenchmarkId::new("send", size_label(size)), |b| {
            b.iter_custom(|iters| {
                let t0 = Instant::now();
                for id in 0..iters {
                    send_all(peer.ch(), Kind::Message, id, &body);
                }
                // Everything before the request has been read once its answer is back.
                peer.round_trip(&[]);
                t0.elapsed()
            });
        });
    }
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("round-trip", 1), |b| {
        b.iter_custom(|iters| {
            let t0 = Instant::now();
            for _ in 0..iters {
                peer.round_trip(&[7]);
            }
            if std::env::var("XHANG").is_ok() {
                std::thread::sleep(Duration::from_secs(60));
            }
            t0.elapsed()
        });
    });
    g.finish();
    drop(peer);
}
