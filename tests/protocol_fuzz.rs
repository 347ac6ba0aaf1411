//! Protocol hostility: random and adversarial bytes through the real frame
//! readers and message decoders. No panic, no allocation above the frame
//! limit, and a `Protocol` error for anything malformed.
//!
//! A coverage-guided fuzzer for the same entry points lives in `fuzz/`
//! (`cargo +nightly fuzz run host_decode`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use procpool::__private::fuzz;
use procpool::Error;

/// Records the largest single allocation, to prove that a hostile length
/// prefix never makes the decoder allocate it.
struct Tracking;
static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Tracking = Tracking;

const MAX: usize = 1 << 20;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn assert_protocol(r: Result<usize, Error>, what: &str) {
    match r {
        Ok(_) => {}
        Err(Error::Protocol { .. }) => {}
        Err(other) => panic!("{what}: expected a Protocol error, got {other:?}"),
    }
}

fn check(bytes: &[u8], what: &str) {
    assert_protocol(fuzz::host_decode(bytes, MAX), what);
    assert_protocol(fuzz::worker_decode(bytes, MAX), what);
}

#[test]
fn random_bytes_never_panic_or_over_allocate() {
    let mut rng = Rng(0x5eed);
    for i in 0..20_000 {
        let len = rng.below(300) as usize;
        let bytes = rng.bytes(len);
        check(&bytes, &format!("random case {i}"));
    }
    assert!(LARGEST.load(Ordering::Relaxed) <= MAX + (1 << 17));
}

#[test]
fn huge_lengths_are_refused_before_allocating() {
    for len in [u32::MAX, u32::MAX - 1, (MAX as u32) + 1, 1 << 31] {
        let mut bytes = len.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0x11; 64]);
        let e = fuzz::host_decode(&bytes, MAX).unwrap_err();
        assert!(
            matches!(&e, Error::Protocol { message } if message.contains("maximum frame size")),
            "{e:?}"
        );
        let e = fuzz::worker_decode(&bytes, MAX).unwrap_err();
        assert!(matches!(e, Error::Protocol { .. }), "{e:?}");
    }
    assert!(
        LARGEST.load(Ordering::Relaxed) < (1 << 30),
        "a hostile length was allocated: {}",
        LARGEST.load(Ordering::Relaxed)
    );
}

#[test]
fn truncated_frames_are_protocol_errors() {
    let frame = fuzz::done_frame(7, &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(fuzz::host_decode(&frame, MAX).unwrap(), 1);
    for cut in 1..frame.len() {
        let e = fuzz::host_decode(&frame[..cut], MAX).unwrap_err();
        assert!(matches!(e, Error::Protocol { .. }), "cut at {cut}: {e:?}");
    }
    let job = fuzz::job_frame(9, 0, b"payload");
    assert_eq!(fuzz::worker_decode(&job, MAX).unwrap(), 1);
    for cut in 1..job.len() {
        assert!(
            fuzz::worker_decode(&job[..cut], MAX).is_err(),
            "cut at {cut}"
        );
    }
}

#[test]
fn a_valid_length_with_an_invalid_body_is_a_protocol_error() {
    let mut rng = Rng(42);
    for _ in 0..5_000 {
        let len = 1 + rng.below(64) as usize;
        let mut bytes = (len as u32).to_le_bytes().to_vec();
        let mut body = rng.bytes(len);
        // Unknown kinds, and known kinds with garbage fields.
        body[0] = [0u8, 5, 0x10, 0x13, 0x7f, 0xff][rng.below(6) as usize];
        bytes.extend_from_slice(&body);
        check(&bytes, "invalid body");
    }
}

#[test]
fn a_valid_frame_of_the_wrong_kind_is_refused() {
    // A job frame is not something a worker may send, and a result frame
    // is not something the host sends.
    let job = fuzz::job_frame(1, 0, b"x");
    assert!(matches!(
        fuzz::host_decode(&job, MAX),
        Err(Error::Protocol { .. })
    ));
    let done = fuzz::done_frame(1, b"x");
    assert!(matches!(
        fuzz::worker_decode(&done, MAX),
        Err(Error::Protocol { .. })
    ));
}

#[test]
fn mutated_valid_streams_never_panic() {
    let mut stream = Vec::new();
    for i in 0..20u64 {
        stream.extend(fuzz::done_frame(i, &i.to_le_bytes()));
        stream.extend(fuzz::job_frame(i, i as u32, &[i as u8; 9]));
    }
    let mut rng = Rng(7);
    for _ in 0..5_000 {
        let mut s = stream.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(s.len() as u64) as usize;
            match rng.below(3) {
                0 => s[at] = rng.next() as u8,
                1 => {
                    s.remove(at);
                }
                _ => s.insert(at, rng.next() as u8),
            }
        }
        check(&s, "mutated stream");
    }
}
