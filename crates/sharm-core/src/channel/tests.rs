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

#[test]
fn queued_blocks_can_lose_a_cancelled_request_and_keep_only_messages_for_a_new_peer() {
    let name = format!("batch-queue-{}", std::process::id());
    let opts = ChannelOptions {
        capacity: 4096,
        ..Default::default()
    };
    let mut a = Channel::open(&name, opts.clone()).unwrap();
    let mut b = Channel::open(&name, opts.clone()).unwrap();
    a.poll().unwrap();
    // The peer does not read: fill the ring until messages queue up.
    while a.queued_bytes() == 0 {
        a.send(Kind::Message, 0, 0, b"fill").unwrap();
    }
    let mut records = Vec::new();
    encode(&mut records, Kind::Message, 0, b"m1");
    encode(&mut records, Kind::Request, 7, b"request");
    encode(&mut records, Kind::Response, 3, b"answer");
    encode(&mut records, Kind::Message, 0, b"m2");
    let before = a.queued_bytes();
    a.send_batch(&records).unwrap();
    assert_eq!(a.queued_bytes() - before, 2 + 7 + 6 + 2, "the batch waits as a block");
    assert!(a.cancel(7));
    assert!(!a.cancel(7));
    assert_eq!(a.queued_bytes() - before, 2 + 6 + 2);
    // The peer leaves: the answer was for it; the messages wait for the next one.
    b.close();
    drop(b);
    a.poll().unwrap();
    let mut c = Channel::open(&name, opts).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while a.queued_bytes() > 0 || !got.contains(&b"m2".to_vec()) {
        assert!(Instant::now() < deadline, "got {got:?}");
        a.poll().unwrap();
        let batch = c.poll().unwrap();
        for m in &batch.messages {
            assert_eq!(m.kind, Kind::Message);
            if let Payload::Inline { offset, len } = m.payload {
                got.push(batch.data[offset..offset + len].to_vec());
            }
        }
    }
    got.retain(|p| p != b"fill");
    assert_eq!(got, vec![b"m1".to_vec(), b"m2".to_vec()]);
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
