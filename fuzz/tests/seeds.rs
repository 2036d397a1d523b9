//! The signature-header fuzz target without libFuzzer, on stable Rust: every
//! seed in `signature_headers_seeds/`, then a fixed number of mutations of
//! them (bit flips, byte insertions and deletions, splices, repeated
//! chunks) from a seeded generator, so the run is the same every time.
//!
//! `cargo test --manifest-path fuzz/Cargo.toml` (`FUZZ_CASES=N` for more).

use std::path::Path;

use leadscore_fuzz::signature_headers;

fn seeds() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("signature_headers_seeds");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| std::fs::read(entry.expect("a seed").path()).expect("a readable seed"))
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 10, "the seeds are in {}", dir.display());
    seeds
}

/// xorshift64*: small, seeded, enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8]) {
    for _ in 0..=rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(7) {
            0 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] ^= 1 << rng.below(8);
            }
            1 => input.insert(at, rng.next() as u8),
            2 if at < input.len() => {
                input.remove(at);
            }
            3 => {
                // Splice in a piece of another seed.
                let from = rng.below(other.len());
                let len = rng.below(other.len() - from + 1);
                input.splice(at..at, other[from..from + len].iter().copied());
            }
            4 => {
                // Repeat a chunk many times (long headers, many entries).
                let from = rng.below(input.len());
                let len = rng.below(16).min(input.len() - from);
                let chunk = input[from..from + len].to_vec();
                for _ in 0..rng.below(400) {
                    input.splice(at..at, chunk.iter().copied());
                }
            }
            5 => input.insert(at, [0u8, b' ', b',', b'=', b'v', b'1'][rng.below(6)]),
            _ => input.truncate(at),
        }
    }
}

#[test]
fn every_seed_passes_the_checks() {
    for seed in seeds() {
        signature_headers(&seed);
    }
}

#[test]
fn mutations_of_the_seeds_pass_the_checks() {
    let cases: usize = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let seeds = seeds();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for case in 0..cases {
        let mut input = seeds[rng.below(seeds.len())].clone();
        let other = &seeds[rng.below(seeds.len())];
        mutate(&mut rng, &mut input, other);
        let result = std::panic::catch_unwind(|| signature_headers(&input));
        if let Err(panic) = result {
            let path = std::env::temp_dir().join(format!("signature_headers-crash-{case}"));
            let _ = std::fs::write(&path, &input);
            std::panic::resume_unwind(Box::new(format!(
                "case {case} failed (input saved to {}): {panic:?}",
                path.display()
            )));
        }
    }
}
