//! Entry point for fuzzing the reading side: arbitrary bytes are laid out as a ring (data area
//! and indices) and read the way a channel reads its incoming ring, through the record decoder and
//! the chunk reassembler. Used by the cargo-fuzz target in `fuzz/` and by a test that replays the
//! kept corpus. Whatever the bytes, this must return, without panicking or reading outside the ring.

use crate::framing::{Reassembler, Step};
use crate::layout::RING_CONTROL_BYTES;
use crate::ring::{Consumer, RingMem};

/// What one run read: (complete messages, total payload bytes, ended in a protocol error).
pub fn decode(input: &[u8]) -> (usize, usize, bool) {
    const CAP: usize = 4096;
    if input.len() < 16 {
        return (0, 0, false);
    }
    // First 16 bytes: the consumer's index and the producer's index, as a peer could set them.
    let read = u64::from_le_bytes(input[0..8].try_into().unwrap());
    let write = u64::from_le_bytes(input[8..16].try_into().unwrap());
    let mut mem = vec![0u128; (RING_CONTROL_BYTES + CAP + 128) / 16];
    let p = mem.as_mut_ptr() as *mut u8;
    // SAFETY: `mem` has room for 128 bytes of alignment slack plus control block plus data.
    let base = unsafe { p.add(p.align_offset(128)) };
    let data = &input[16..];
    // SAFETY: base is 128-aligned and RING_CONTROL_BYTES + CAP bytes long, inside `mem`.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), base.add(RING_CONTROL_BYTES), data.len().min(CAP)) };
    // SAFETY: as above; `mem` outlives `ring` and the consumer (both end with this function).
    let ring = unsafe { RingMem::new(base, CAP) };
    ring.control()
        .consumer
        .read
        .store(read, std::sync::atomic::Ordering::SeqCst);
    ring.control()
        .producer
        .write
        .store(write, std::sync::atomic::Ordering::SeqCst);
    let mut consumer = Consumer::new(ring, false);
    let mut asm = Reassembler::new(1 << 16);
    let (mut messages, mut bytes) = (0, 0);
    // A ring of CAP bytes holds at most CAP / 8 records: bound the loop the same way.
    for _ in 0..CAP / 8 + 1 {
        let peeked = match consumer.peek() {
            Ok(Some(p)) => p,
            Ok(None) => return (messages, bytes, false),
            Err(_) => return (messages, bytes, true),
        };
        match asm.push(&peeked.header, consumer.payload(&peeked)) {
            Ok(Step::Whole(b)) => {
                messages += 1;
                bytes += b.len();
            }
            Ok(Step::Done(v)) => {
                messages += 1;
                bytes += v.len();
            }
            Ok(_) => {}
            Err(_) => return (messages, bytes, true),
        }
        consumer.consume(&peeked);
    }
    drop(mem);
    (messages, bytes, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays every input kept in `fuzz/corpus/decode` (seeds and what the fuzzer found).
    #[test]
    fn the_kept_fuzz_corpus_decodes_without_panicking() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/decode");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("the corpus is kept in the repository") {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            decode(&bytes);
            n += 1;
        }
        assert!(n >= 3, "corpus has only {n} inputs");
    }

    #[test]
    fn a_well_formed_ring_decodes_its_messages() {
        let mut input = Vec::new();
        input.extend_from_slice(&0u64.to_le_bytes());
        input.extend_from_slice(&48u64.to_le_bytes());
        for (id, body) in [(1u64, b"hello!!!"), (2, b"world..!")] {
            let h = crate::record::RecordHeader {
                len: 8,
                kind: crate::record::Kind::Message,
                flags: 0,
                gen: 0,
                id,
            };
            input.extend_from_slice(&h.encode());
            input.extend_from_slice(body);
        }
        assert_eq!(input.len(), 16 + 48);
        assert_eq!(decode(&input), (2, 16, false));
    }
}
