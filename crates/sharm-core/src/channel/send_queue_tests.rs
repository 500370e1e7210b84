//! Tests of the send queue's buffers: large messages that wait for ring space, in buffers that
//! earlier ones went out of (see `send`'s `SPARE_BYTES`).

use std::time::{Duration, Instant};

use super::send::SPARE_BYTES;
use super::*;
use crate::record::Kind;

/// A pair on a 256 KiB ring (records of under 64 KiB), the queue limited to `max_queue_bytes`.
fn pair(name: &str, max_queue_bytes: usize) -> (Channel, Channel) {
    let opts = ChannelOptions {
        capacity: 256 << 10,
        max_queue_bytes,
        ..Default::default()
    };
    let mut a = Channel::open(name, opts.clone()).unwrap();
    let mut b = Channel::open(name, opts).unwrap();
    b.poll().unwrap();
    a.poll().unwrap();
    (a, b)
}

/// Message `i`: 70 to 400 KiB, each with bytes of its own, so that a buffer reused with any of
/// its predecessor's bytes left in it shows.
fn message(i: usize) -> Vec<u8> {
    sized(i, (70 << 10) + i * 37_813 % (330 << 10))
}

/// Message `i` of `len` bytes, its bytes its own: each 4 KiB of it filled with a value of its own
/// (filled, not computed per byte: a debug build under an emulator is slow enough as it is).
fn sized(i: usize, len: usize) -> Vec<u8> {
    let mut m = vec![0u8; len];
    for (page, bytes) in m.chunks_mut(4096).enumerate() {
        bytes.fill((page * 31 + i * 7 + 1) as u8);
    }
    m
}

/// The bytes of what one poll of `b` delivered, each message whole.
fn take(b: &mut Channel, got: &mut Vec<Vec<u8>>) {
    let batch = b.poll().unwrap();
    for m in batch.messages {
        got.push(match m.payload {
            Payload::Inline { offset, len } => batch.data[offset..offset + len].to_vec(),
            Payload::Owned(v) => v,
        });
    }
    b.delivered();
}

/// Every message in `got` is `message(i)`, byte for byte.
fn arrived_intact(got: &[Vec<u8>], message: impl Fn(usize) -> Vec<u8>) {
    for (i, m) in got.iter().enumerate() {
        assert!(
            *m == message(i),
            "message {i}: {} bytes, expected {}",
            m.len(),
            message(i).len()
        );
    }
}

#[test]
fn large_messages_that_wait_in_the_queue_arrive_intact_through_reused_buffers() {
    let limit = 20_000_000;
    let (mut a, mut b) = pair(&format!("reuse-{}", std::process::id()), limit);
    let count = 40;
    let (mut sent, mut got) = (0, Vec::new());
    let mut reused_at_most = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < count {
        assert!(Instant::now() < deadline, "{} of {count} arrived", got.len());
        while sent < count && a.queued_bytes() < (1 << 20) {
            a.send(Kind::Message, 0, 0, &message(sent)).unwrap();
            sent += 1;
        }
        a.poll().unwrap();
        let held = a.queue.spare_bytes() + a.queued_bytes();
        assert!(
            held <= limit,
            "{held} bytes in the queue and kept spare, over its limit {limit}"
        );
        reused_at_most = reused_at_most.max(a.queue.spare.len());
        take(&mut b, &mut got);
    }
    arrived_intact(&got, message);
    assert!(reused_at_most > 0, "no buffer was kept for reuse");
}

#[test]
fn a_sender_that_fills_the_queue_and_waits_for_it_to_empty_reuses_all_its_buffers_until_it_pauses() {
    // The way a sender that waits for 'drain' goes: fill the queue to its limit, wait until it
    // is empty, fill it again at once. Messages of one size, as such a sender's often are.
    let limit = 6 << 20;
    let message = |i| sized(i, 300 << 10);
    let (mut a, mut b) = pair(&format!("refill-{}", std::process::id()), limit);
    let (mut sent, mut got) = (0, Vec::new());
    // Only against a hang: a debug build under qemu-user takes tens of seconds.
    let deadline = Instant::now() + Duration::from_secs(300);
    for round in 0..3 {
        let spare_before = a.queue.spare.len();
        while a.send(Kind::Message, 0, 0, &message(sent)).is_ok() {
            sent += 1;
        }
        let queued = a.queued_bytes();
        assert!(queued > 5 << 20, "round {round}: only {queued} bytes queued");
        if round > 0 {
            assert!(
                a.queue.spare.len() <= 1,
                "round {round}: {} of the {spare_before} spare buffers left after filling the queue",
                a.queue.spare.len()
            );
        }
        // Empty the queue, and stop there: the sender goes on at once.
        while a.queued_bytes() > 0 {
            assert!(Instant::now() < deadline, "round {round}: the queue did not empty");
            take(&mut b, &mut got);
            a.poll().unwrap();
            let held = a.queue.spare_bytes() + a.queued_bytes();
            assert!(held <= limit, "round {round}: {held} bytes in the queue and kept spare");
        }
        let spare = a.queue.spare_bytes();
        assert!(
            spare > SPARE_BYTES,
            "round {round}: {spare} bytes kept spare for a sender that goes on, not more than {SPARE_BYTES}"
        );
    }
    // The sender pauses: the next flush with nothing queued cuts the spare buffers back.
    a.poll().unwrap();
    let spare = a.queue.spare_bytes();
    assert!(spare <= SPARE_BYTES, "{spare} bytes kept spare after the sender paused");
    while got.len() < sent {
        assert!(Instant::now() < deadline, "{} of {sent} arrived", got.len());
        take(&mut b, &mut got);
        a.poll().unwrap();
    }
    arrived_intact(&got, message);
    assert!(sent > 50, "{sent} messages sent");
}
