//! Two OS processes talk through a channel: this test binary runs itself again as the peer.

use std::process::Command;
use std::time::{Duration, Instant};

use sharm_core::{Channel, ChannelOptions, Kind, Payload, PeerEvent};

const CHILD_ENV: &str = "SHARM_CORE_TEST_PEER";

fn opts() -> ChannelOptions {
    ChannelOptions {
        capacity: 64 * 1024,
        ..Default::default()
    }
}

fn payload_of(batch: &sharm_core::Batch, p: &Payload) -> Vec<u8> {
    match p {
        Payload::Inline { offset, len } => batch.data[*offset..offset + len].to_vec(),
        Payload::Owned(v) => v.clone(),
    }
}

/// The peer: answers every request with its payload reversed until it got `n` messages.
fn run_peer(name: &str) {
    let mut ch = Channel::open(name, opts()).expect("peer opens");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut messages = 0;
    while messages < 3 && Instant::now() < deadline {
        let b = ch.poll().expect("peer polls");
        for m in &b.messages {
            let mut data = payload_of(&b, &m.payload);
            match m.kind {
                Kind::Request => {
                    data.reverse();
                    ch.send(Kind::Response, m.id, m.gen, &data).unwrap();
                }
                Kind::Message => messages += 1,
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    // Let our answers drain before leaving.
    while ch.queued_bytes() > 0 && Instant::now() < deadline {
        ch.poll().unwrap();
        std::thread::sleep(Duration::from_micros(200));
    }
    ch.close();
}

#[test]
fn two_processes_exchange_requests_answers_and_messages() {
    if let Ok(name) = std::env::var(CHILD_ENV) {
        run_peer(&name);
        return;
    }
    let name = format!("core-test-{}", std::process::id());
    let mut ch = Channel::open(&name, opts()).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "two_processes_exchange_requests_answers_and_messages",
            "--nocapture",
        ])
        .env(CHILD_ENV, &name)
        .spawn()
        .unwrap();

    // A small request, a 1 MiB request (chunked through the 64 KiB ring), and three messages.
    let big: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
    ch.send(Kind::Request, 1, 0, b"abc").unwrap();
    ch.send(Kind::Request, 2, 0, &big).unwrap();
    for i in 0..3u8 {
        ch.send(Kind::Message, 0, 0, &[i]).unwrap();
    }
    let mut answers = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while answers.len() < 2 && Instant::now() < deadline {
        let b = ch.poll().unwrap();
        for m in &b.messages {
            assert_eq!(m.kind, Kind::Response);
            answers.insert(m.id, payload_of(&b, &m.payload));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(answers[&1], b"cba");
    let mut expected = big.clone();
    expected.reverse();
    assert!(answers[&2] == expected, "1 MiB answer differs");
    assert!(child.wait().unwrap().success());
    // The peer left: a poll says so, once, after the connect it saw.
    assert!(!ch.peer_connected());
    let mut events = Vec::new();
    while !events.iter().any(|e| matches!(e, PeerEvent::Left(_))) {
        assert!(Instant::now() < deadline, "no departure among {events:?}");
        events.extend(ch.poll().unwrap().events);
    }
    let gens: Vec<_> = events
        .iter()
        .map(|e| (matches!(e, PeerEvent::Joined { .. }), e.generation()))
        .collect();
    assert_eq!(gens.last().map(|g| g.0), Some(false), "{events:?}");
    ch.close();
    drop(ch);
    assert!(sharm_core::segment::os_id_for(&name).is_ok());
    assert!(
        !std::path::Path::new(&format!("/dev/shm/sharm.{name}")).exists(),
        "segment removed by the last side out"
    );
}

#[test]
fn a_third_opener_is_refused_while_two_live_sides_hold_the_channel() {
    let name = format!("core-busy-{}", std::process::id());
    let a = Channel::open(&name, opts()).unwrap();
    let b = Channel::open(&name, opts()).unwrap();
    assert_ne!(a.side(), b.side());
    match Channel::open(&name, opts()) {
        Err(e) => assert_eq!(e.code(), "ERR_SHARM_BUSY"),
        Ok(_) => panic!("a third side must be refused"),
    }
    drop(a);
    // A side freed by close can be taken again, with a new generation.
    let gen_before = b.generation();
    let c = Channel::open(&name, opts()).unwrap();
    assert_ne!(c.side(), b.side());
    assert!(c.generation() >= 1 && gen_before >= 1);
    drop(b);
    drop(c);
    assert!(!std::path::Path::new(&format!("/dev/shm/sharm.{name}")).exists());
}
