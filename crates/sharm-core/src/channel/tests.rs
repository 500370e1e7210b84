//! Tests of the channel within one process: batches, the queue, bad input.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::*;
use crate::record::tests::append_record as encode;
use crate::record::Kind;

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

/// Polls `ch` until a departure comes out (within 5 s) and returns it, with the events before it.
fn departure_of(ch: &mut Channel) -> (Vec<PeerEvent>, Departure) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut before = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "no departure; events {before:?}");
        for ev in ch.poll().unwrap().events {
            match ev {
                PeerEvent::Left(d) => return (before, d),
                ev => before.push(ev),
            }
        }
    }
}

#[test]
fn what_waits_in_the_queue_when_the_peer_leaves_is_handed_back_not_sent_to_the_next_one() {
    let name = format!("batch-queue-{}", std::process::id());
    let (mut a, mut b) = pair(&name, 4096);
    a.poll().unwrap();
    // The peer does not read: fill the ring until messages queue up.
    let mut fills = 0;
    while a.queued_bytes() == 0 {
        a.send(Kind::Message, 0, 0, b"fill").unwrap();
        fills += 1;
    }
    let mut records = Vec::new();
    encode(&mut records, Kind::Message, 0, b"m1");
    encode(&mut records, Kind::Request, 7, b"request");
    encode(&mut records, Kind::Request, 8, b"request");
    encode(&mut records, Kind::Response, 3, b"answer");
    encode(&mut records, Kind::Message, 0, b"m2");
    let before = a.queued_bytes();
    a.send_batch(&records).unwrap();
    assert_eq!(
        a.queued_bytes() - before,
        2 + 7 + 7 + 6 + 2,
        "the batch waits as a block"
    );
    assert!(a.cancel(7));
    assert!(!a.cancel(7));
    assert_eq!(a.queued_bytes() - before, 2 + 7 + 6 + 2);
    // The peer leaves without reading anything.
    b.close();
    drop(b);
    let (_, d) = departure_of(&mut a);
    let fill = b"fill".to_vec();
    let mut expected = vec![fill; fills];
    expected.extend([b"m1".to_vec(), b"m2".to_vec()]);
    assert_eq!(d.undelivered, expected, "every message, in order");
    assert!(d.in_doubt.is_empty());
    assert_eq!(d.requests_unsent, [8]);
    assert_eq!(d.requests_through, 8);
    assert_eq!(a.queued_bytes(), 0);
    // A newcomer gets none of it, only what is sent after.
    let mut c = Channel::open(&name, a.opts.clone()).unwrap();
    a.poll().unwrap();
    a.send(Kind::Message, 0, 0, b"new").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while got.is_empty() {
        assert!(Instant::now() < deadline);
        a.poll().unwrap();
        let batch = c.poll().unwrap();
        for m in &batch.messages {
            if let Payload::Inline { offset, len } = m.payload {
                got.push(batch.data[offset..offset + len].to_vec());
            }
        }
    }
    assert_eq!(got, [b"new".to_vec()]);
}

#[test]
fn a_departure_says_which_messages_were_delivered_in_doubt_or_never_taken() {
    let name = format!("account-{}", std::process::id());
    let opts = ChannelOptions {
        capacity: 64 * 1024,
        ..Default::default()
    };
    let mut a = Channel::open(&name, opts.clone()).unwrap();
    let mut b = Channel::open(&name, opts.clone()).unwrap();
    a.poll().unwrap();
    let numbered = |i: u32| i.to_le_bytes().to_vec();
    for i in 0..100 {
        a.send(Kind::Message, 0, 0, &numbered(i)).unwrap();
    }
    // The reader takes a first batch and delivers it (the next poll says so), then takes a
    // second one and stops before delivering it.
    let mut meta = vec![0u32; 4 * 30];
    let mut arena = vec![0u8; 4096];
    let mut large = VecDeque::new();
    let mut take = |b: &mut Channel| {
        let mut sink = ArenaSink {
            meta: &mut meta,
            arena: &mut arena,
            used: 0,
            count: 0,
            inline_max: 1024,
            large: &mut large,
        };
        b.poll_into(&mut sink).unwrap();
        sink.count
    };
    assert_eq!(take(&mut b), 30);
    assert_eq!(take(&mut b), 30);
    b.close();
    let (_, d) = departure_of(&mut a);
    assert_eq!(d.in_doubt, (30..60).map(numbered).collect::<Vec<_>>());
    assert_eq!(d.undelivered, (60..100).map(numbered).collect::<Vec<_>>());
    assert_eq!(d.unconfirmed(), 70);
}

#[test]
fn a_newcomer_reads_nothing_meant_for_its_predecessor_before_the_writer_accounted_for_it() {
    let name = format!("welcome-{}", std::process::id());
    let (mut a, mut b) = pair(&name, 4096);
    a.poll().unwrap();
    for i in 0..10u8 {
        a.send(Kind::Message, 0, 0, &[i]).unwrap();
    }
    b.close();
    drop(b);
    // The newcomer attaches before the writer looked: it must wait for the welcome.
    let mut c = Channel::open(&name, a.opts.clone()).unwrap();
    assert!(c.poll().unwrap().messages.is_empty());
    let (joined, d) = departure_of(&mut a);
    assert!(joined.is_empty(), "{joined:?}");
    assert_eq!(d.undelivered.len(), 10, "the backlog was counted, not skipped unseen");
    a.send(Kind::Message, 0, 0, b"for c").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < deadline);
        a.poll().unwrap();
        let batch = c.poll().unwrap();
        if let Some(m) = batch.messages.first() {
            assert_eq!(batch.messages.len(), 1);
            let Payload::Inline { offset, len } = m.payload else {
                panic!()
            };
            assert_eq!(&batch.data[offset..offset + len], b"for c");
            break;
        }
    }
}

#[test]
fn a_peer_that_left_before_the_first_poll_is_joined_then_left_in_order() {
    let name = format!("order-{}", std::process::id());
    let opts = ChannelOptions::default();
    let mut p = Channel::open(&name, opts.clone()).unwrap();
    let mut n = Channel::open(&name, opts).unwrap();
    let pg = p.generation();
    p.send(Kind::Message, 0, 0, b"last words").unwrap();
    p.close();
    let b = n.poll().unwrap();
    assert!(!n.peer_connected());
    let mut events: Vec<_> = b
        .events
        .iter()
        .map(|e| (matches!(e, PeerEvent::Joined { .. }), e.generation()))
        .collect();
    let mut messages = b.messages.len();
    // The departure comes after the message the peer wrote before it left.
    while events.len() < 2 {
        let b = n.poll().unwrap();
        assert!(b.messages.is_empty() || events.len() == 1);
        messages += b.messages.len();
        events.extend(
            b.events
                .iter()
                .map(|e| (matches!(e, PeerEvent::Joined { .. }), e.generation())),
        );
    }
    assert_eq!(events, [(true, pg), (false, pg)]);
    assert_eq!(messages, 1);
}

#[test]
fn a_first_peer_that_left_before_the_first_poll_without_a_word_is_joined_then_left() {
    // Nothing of it to read but its HELLO: its coming and going is known only from its slot and
    // its welcome, which this side's first poll opens the ring with.
    let name = format!("silent-{}", std::process::id());
    let opts = ChannelOptions::default();
    let mut n = Channel::open(&name, opts.clone()).unwrap();
    let mut p = Channel::open(&name, opts).unwrap();
    let pg = p.generation();
    p.close();
    // Polled as the event loop polls: once woken, then again while a poll says there is more.
    let mut events = Vec::new();
    loop {
        let b = n.poll().unwrap();
        events.extend(
            b.events
                .iter()
                .map(|e| (matches!(e, PeerEvent::Joined { .. }), e.generation())),
        );
        if !b.more {
            break;
        }
    }
    assert_eq!(events, [(true, pg), (false, pg)]);
    assert!(!n.peer_connected());
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

/// A segment file as a creator that died at once would leave it: full size, all zeros. Before
/// its creator claimed it nobody can tell it from one being created, but not for long.
#[cfg(target_os = "linux")]
#[test]
fn an_unclaimed_zeroed_segment_is_taken_over_and_created_afresh() {
    let name = format!("unclaimed-{}", std::process::id());
    let path = format!("/dev/shm/sharm.{name}");
    std::fs::write(&path, vec![0u8; crate::layout::segment_bytes(4096)]).unwrap();
    let opts = ChannelOptions {
        capacity: 8192,
        ..Default::default()
    };
    let mut ch = Channel::open(&name, opts).unwrap();
    assert_eq!(ch.capacity(), 8192, "created afresh, with our capacity");
    ch.close();
    drop(ch);
    assert!(!std::path::Path::new(&path).exists());
}

/// A creator that died half-way leaves its pid and a header that is not READY.
#[cfg(target_os = "linux")]
#[test]
fn a_segment_whose_creator_died_half_way_is_taken_over() {
    use crate::layout::{segment_bytes, Header};
    use std::sync::atomic::Ordering::SeqCst;
    let name = format!("half-made-{}", std::process::id());
    let path = format!("/dev/shm/sharm.{name}");
    let dead = crate::test_process::exited_pid();
    let mut bytes = vec![0u8; segment_bytes(4096)];
    let creator = std::mem::offset_of!(Header, creator_pid);
    bytes[creator..creator + 4].copy_from_slice(&dead.to_le_bytes());
    bytes[..8].copy_from_slice(b"SHARMIPC");
    std::fs::write(&path, bytes).unwrap();
    let mut ch = Channel::open(&name, ChannelOptions::default()).unwrap();
    assert_eq!(ch.capacity(), ChannelOptions::default().capacity, "created afresh");
    assert_eq!(ch.shared.header().init_state.load(SeqCst), crate::layout::INIT_READY);
    ch.close();
    drop(ch);
    assert!(!std::path::Path::new(&path).exists());
}

/// Kinds and ids of what `b` has received until `until` holds (at most 5 s).
fn received_until(b: &mut Channel, until: impl Fn(&[(Kind, u64, u16)]) -> bool) -> Vec<(Kind, u64, u16)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while !until(&got) {
        assert!(Instant::now() < deadline, "got {got:?}");
        for m in b.poll().unwrap().messages {
            got.push((m.kind, m.id, m.gen));
        }
    }
    got
}

#[test]
fn a_withdrawn_request_is_taken_from_the_queue_or_followed_by_a_cancel_with_the_askers_generation() {
    let (mut a, mut b) = pair(&format!("withdraw-{}", std::process::id()), 4096);
    a.poll().unwrap();
    // In the ring already: the peer gets the request, then a cancel naming it.
    a.send(Kind::Request, 5, 0, b"question").unwrap();
    a.withdraw(5).unwrap();
    let got = received_until(&mut b, |g| g.len() == 2);
    let gen = got[0].2;
    assert_ne!(gen, 0, "the asker's generation");
    assert_eq!(got, vec![(Kind::Request, 5, gen), (Kind::Cancel, 5, gen)]);
    // Still queued (the peer does not read): it is taken out and nothing is sent for it.
    while a.queued_bytes() == 0 {
        a.send(Kind::Message, 0, 0, b"fill").unwrap();
    }
    a.send(Kind::Request, 6, 0, b"queued").unwrap();
    let queued = a.queued_bytes();
    a.withdraw(6).unwrap();
    assert_eq!(a.queued_bytes(), queued - 6);
    a.send(Kind::Message, 1, 0, b"last").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while !got.contains(&(Kind::Message, 1, 0)) {
        assert!(Instant::now() < deadline, "got {got:?}");
        a.poll().unwrap();
        got.extend(b.poll().unwrap().messages.iter().map(|m| (m.kind, m.id, m.gen)));
    }
    assert!(got.iter().all(|m| m.0 == Kind::Message), "{got:?}");
}

#[test]
fn a_sync_request_that_times_out_is_followed_by_a_cancel() {
    let (mut a, mut b) = pair(&format!("sync-cancel-{}", std::process::id()), 4096);
    a.poll().unwrap();
    let e = a.request_sync(9, b"question", Duration::from_millis(30)).unwrap_err();
    assert!(matches!(e, Error::Timeout(30)), "{e}");
    let got = received_until(&mut b, |g| g.len() == 2);
    assert_eq!(
        got.iter().map(|m| (m.0, m.1)).collect::<Vec<_>>(),
        [(Kind::Request, 9), (Kind::Cancel, 9)]
    );
    assert_eq!(got[0].2, got[1].2);
}

#[test]
fn what_a_blocking_request_kept_across_a_change_of_peer_comes_out_in_order_with_the_events() {
    let name = format!("sync-boundary-{}", std::process::id());
    let (mut a, mut b) = pair(&name, 4096);
    a.poll().unwrap();
    let b_gen = b.generation();
    b.send(Kind::Message, 0, 0, b"from b").unwrap();
    b.close();
    drop(b);
    let mut c = Channel::open(&name, a.opts.clone()).unwrap();
    let c_gen = c.generation();
    // A blocks on a request, which goes to the newcomer (the departure is seen before it is
    // sent), while the old peer's message and the newcomer's HELLO come in. The newcomer does not
    // answer: it is not polled meanwhile.
    let e = a.request_sync(1, b"question", Duration::from_millis(100)).unwrap_err();
    assert_eq!(e.code(), "ERR_SHARM_TIMEOUT", "{e}");
    let got = c.poll().unwrap();
    assert!(
        got.messages.iter().any(|m| m.kind == Kind::Request && m.id == 1),
        "the request went to the newcomer"
    );
    c.send(Kind::Message, 0, 0, b"from c").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while !seen.contains(&"message from c".to_string()) {
        assert!(Instant::now() < deadline, "{seen:?}");
        let batch = a.poll().unwrap();
        for ev in &batch.events {
            let what = if matches!(ev, PeerEvent::Joined { .. }) {
                "joined"
            } else {
                "left"
            };
            seen.push(format!("{what} {}", ev.generation()));
        }
        for m in &batch.messages {
            if let Payload::Inline { offset, len } = m.payload {
                seen.push(format!(
                    "message {}",
                    String::from_utf8_lossy(&batch.data[offset..offset + len])
                ));
            }
        }
        c.poll().unwrap();
    }
    let expected = [
        "message from b".to_string(),
        format!("left {b_gen}"),
        format!("joined {c_gen}"),
        "message from c".to_string(),
    ];
    assert_eq!(seen, expected);
}

#[test]
fn a_peer_that_lived_while_the_wake_up_thread_rested_is_notified_when_it_leaves() {
    // The wake-up thread sees the peer half-way through attaching (its generation taken, not yet
    // ready) and notifies; the peer then becomes ready and leaves while the driving thread polls by
    // itself and the wake-up thread rests. The slot looks as it did at the half-way notification,
    // but the driving thread last saw the peer attached: the departure is news, and is notified.
    // (The peer's slot is written here as a peer's attach and a reap write it.)
    use crate::layout::{ATTACH_SIDE, SLOT_ATTACHING, SLOT_FREE, SLOT_READY};
    use std::sync::atomic::Ordering::SeqCst;
    let name = format!("rested-{}", std::process::id());
    let mut a = Channel::open(&name, ChannelOptions::default()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let waker = a.waker();
    let thread = std::thread::spawn(move || {
        waker.run(move || {
            let _ = tx.send(());
        })
    });
    let notified = |a: &mut Channel, what: &str| {
        rx.recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("no notification within 5 s {what}"));
        a.poll().unwrap()
    };
    notified(&mut a, "at the first look");
    let shared = a.shared.clone();
    let (h, peer_side) = (shared.header(), 1 - shared.side);
    let slot = &h.slots[peer_side];
    h.attach.fetch_or(ATTACH_SIDE[peer_side], SeqCst);
    slot.state.store(SLOT_ATTACHING, SeqCst);
    let gen = slot.generation.fetch_add(1, SeqCst) + 1;
    let half = notified(&mut a, "of the half-attached peer");
    assert!(half.events.is_empty(), "{:?}", half.events);

    a.set_driving(true);
    let (pid, start) = crate::liveness::current();
    slot.start_time.store(start, SeqCst);
    slot.pid.store(pid, SeqCst);
    slot.state.store(SLOT_READY, SeqCst);
    let joined = a.poll().unwrap();
    assert!(
        matches!(joined.events[..], [PeerEvent::Joined { generation, .. }] if generation == gen),
        "{:?}",
        joined.events
    );
    a.set_driving(false);

    slot.pid.store(0, SeqCst);
    slot.state.store(SLOT_FREE, SeqCst);
    h.attach.fetch_and(!ATTACH_SIDE[peer_side], SeqCst);
    let left = notified(&mut a, "of the departure");
    assert!(
        matches!(left.events[..], [PeerEvent::Left(ref d)] if d.generation == gen),
        "{:?}",
        left.events
    );
    a.close();
    thread.join().unwrap();
}

#[test]
fn the_peer_is_reaped_only_as_the_last_look_saw_it() {
    use super::header_check::HeaderWatch;
    use crate::layout::{SLOT_FREE, SLOT_READY};
    use std::sync::atomic::Ordering::SeqCst;
    let name = format!("reap-look-{}", std::process::id());
    let (a, b) = pair(&name, 4096);
    let h = a.shared.header();
    let peer = &h.slots[b.shared.side];
    let mut watch = HeaderWatch::new(h, a.shared.side, a.my_gen);
    watch.look(h).unwrap();
    // The peer's pid written over after the look, before the reap: no process has it, but the
    // process the look saw is alive. Not reaped; the next look reports the scribble.
    let live_pid = peer.pid.load(SeqCst);
    peer.pid.store(crate::test_process::NO_PID, SeqCst);
    assert!(
        !watch.reap_peer_if_dead(h),
        "a scribbled pid was reaped as a dead process"
    );
    assert_eq!(peer.state.load(SeqCst), SLOT_READY);
    let e = watch.look(h).unwrap_err().to_string();
    assert!(e.contains("changed from pid"), "{e}");
    // A dead process, as a look saw it, is reaped.
    peer.pid.store(crate::test_process::exited_pid(), SeqCst);
    let mut watch = HeaderWatch::new(h, a.shared.side, a.my_gen);
    watch.look(h).unwrap();
    assert!(watch.reap_peer_if_dead(h));
    assert_eq!(peer.state.load(SeqCst), SLOT_FREE);
    assert_eq!(peer.pid.load(SeqCst), 0);
    // Put the slot back as it was, so that both sides close as they would.
    peer.pid.store(live_pid, SeqCst);
    peer.state.store(SLOT_READY, SeqCst);
    h.attach.fetch_or(crate::layout::ATTACH_SIDE[b.shared.side], SeqCst);
}

#[test]
fn a_scribble_before_the_wake_up_threads_first_look_at_a_newcomer_is_a_corrupt_header_not_a_departure() {
    // The peer joins and this side's poll sees it; its pid is written over before the wake-up
    // thread (late on a loaded machine) first looks at its slot. That look must not take the
    // scribble for the slot as it was, nor reap the "dead" pid as a departure.
    use crate::test_process::NO_PID;
    use std::sync::atomic::Ordering::SeqCst;
    let name = format!("first-look-{}", std::process::id());
    let mut a = Channel::open(&name, ChannelOptions::default()).unwrap();
    // Made at open, as the binding makes it: its first look sees no peer yet.
    let waker = a.waker();
    let mut b = Channel::open(&name, ChannelOptions::default()).unwrap();
    b.poll().unwrap();
    let joined = a.poll().unwrap();
    assert!(
        matches!(joined.events[..], [PeerEvent::Joined { .. }]),
        "{:?}",
        joined.events
    );
    let h = a.shared.header();
    let slot = &h.slots[b.side()];
    slot.pid.store(NO_PID, SeqCst);
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        waker.run(move || {
            let _ = tx.send(());
        })
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("a notification within 5 s of the first look");
    assert_eq!(
        slot.pid.load(SeqCst),
        NO_PID,
        "the scribbled pid was reaped as a dead process"
    );
    let e = a.poll().expect_err("the header is corrupt").to_string();
    assert!(e.contains("changed from pid"), "{e}");
    a.close();
    thread.join().unwrap();
}

#[test]
fn a_newcomers_generation_going_back_before_it_welcomed_this_side_is_a_corrupt_header_not_a_departure() {
    // This side's poll sees the newcomer's slot ready, and welcomes it, before the newcomer
    // welcomed this side to its ring (it does so just after it says ready): nothing of it is read
    // yet. A scribble that puts its generation back must then be a corrupt header, not taken for
    // the newcomer's departure.
    use std::sync::atomic::Ordering::SeqCst;
    let name = format!("gen-back-{}", std::process::id());
    let mut a = Channel::open(&name, ChannelOptions::default()).unwrap();
    let b = Channel::open(&name, ChannelOptions::default()).unwrap();
    a.refresh_peer().unwrap();
    assert!(!a.rx_open, "this side read nothing of the newcomer yet");
    // The same header, through the newcomer's mapping.
    let slot = &b.shared.header().slots[b.side()];
    let gen = slot.generation.load(SeqCst);
    slot.generation.store(gen.wrapping_sub(1), SeqCst);
    let e = a.poll().expect_err("the header is corrupt").to_string();
    assert!(e.contains("went back"), "{e}");
    slot.generation.store(gen, SeqCst);
}

#[test]
fn a_first_look_at_a_newcomer_still_attaching_does_not_let_a_later_scribble_pass_for_its_pid() {
    // The wake-up thread's first look at the newcomer's generation comes while it attaches (no pid
    // yet); this side's poll then sees it join, and its pid is written over before the wake-up
    // thread looks again. That look must report the scribble, not take it for the newcomer's pid
    // (whose process is "dead": its reap would pass for a departure).
    use super::header_check::{HeaderWatch, SlotLook};
    use crate::layout::{SLOT_ATTACHING, SLOT_READY};
    use crate::test_process::NO_PID;
    use std::sync::atomic::Ordering::SeqCst;
    let name = format!("attaching-look-{}", std::process::id());
    let mut a = Channel::open(&name, ChannelOptions::default()).unwrap();
    let shared = a.shared.clone();
    let h = shared.header();
    let mut watch = HeaderWatch::new(h, a.shared.side, a.my_gen);
    let b = Channel::open(&name, ChannelOptions::default()).unwrap();
    let slot = &h.slots[b.side()];
    let (pid, start) = (slot.pid.load(SeqCst), slot.start_time.load(SeqCst));
    // The slot as it is half-way through the newcomer's attach.
    slot.state.store(SLOT_ATTACHING, SeqCst);
    slot.pid.store(0, SeqCst);
    slot.start_time.store(0, SeqCst);
    watch.look(h).unwrap();
    slot.start_time.store(start, SeqCst);
    slot.pid.store(pid, SeqCst);
    slot.state.store(SLOT_READY, SeqCst);
    // This side's poll sees it join, and hands its look to the watch (as `polling` does).
    let joined = a.poll().unwrap();
    assert!(
        matches!(joined.events[..], [PeerEvent::Joined { .. }]),
        "{:?}",
        joined.events
    );
    watch.joined(SlotLook::read(h, b.side()).unwrap());
    slot.pid.store(NO_PID, SeqCst);
    let e = watch.look(h).expect_err("the scribble is reported").to_string();
    assert!(e.contains("changed from pid"), "{e}");
    assert!(!watch.reap_peer_if_dead(h), "the scribbled pid was reaped");
    slot.pid.store(pid, SeqCst);
}
