//! A short, deterministic smoke run of the fuzz targets on the stable toolchain (cargo-fuzz needs
//! nightly): every committed corpus input, plus a few thousand seeded mutations of them (bit flips,
//! truncations, splices, inserted bytes), through the same checks the fuzz targets run.

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[allow(dead_code, clippy::all)]
#[path = "../../fuzz/checks/filter_parse.rs"]
mod filter_parse;

#[allow(dead_code, clippy::all)]
#[path = "../../fuzz/checks/entity_json.rs"]
mod entity_json;

#[allow(dead_code, clippy::all)]
#[path = "../../fuzz/checks/batch_multipart.rs"]
mod batch_multipart;

const MUTATIONS_PER_TARGET: usize = 20_000;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "the {target} corpus is committed");
    inputs
}

fn mutate(rng: &mut StdRng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.gen_range(1..4) {
        match rng.gen_range(0..5) {
            0 if !out.is_empty() => {
                let i = rng.gen_range(0..out.len());
                out[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if !out.is_empty() => out.truncate(rng.gen_range(0..out.len())),
            2 => {
                let i = rng.gen_range(0..=out.len());
                let b = *b"()'\"=:{}[]\\\n\r-0123456789LXeandornot ,"
                    .get(rng.gen_range(0..38))
                    .unwrap_or(&b' ');
                out.insert(i, b);
            }
            3 if !other.is_empty() => {
                let at = rng.gen_range(0..=out.len());
                let from = rng.gen_range(0..other.len());
                out.splice(at..at, other[from..].iter().copied().take(16));
            }
            _ => {
                let i = rng.gen_range(0..=out.len());
                out.insert(i, rng.r#gen());
            }
        }
    }
    out
}

fn smoke(target: &str, check: fn(&[u8])) {
    let inputs = corpus(target);
    for input in &inputs {
        check(input);
    }
    let mut rng = StdRng::seed_from_u64(0x007e_571e);
    for _ in 0..MUTATIONS_PER_TARGET {
        let a = &inputs[rng.gen_range(0..inputs.len())];
        let b = &inputs[rng.gen_range(0..inputs.len())];
        check(&mutate(&mut rng, a, b));
    }
}

#[test]
fn t01_filter_parse_survives_its_corpus_and_mutations() {
    smoke("filter_parse", filter_parse::check);
}

#[test]
fn t02_entity_json_survives_its_corpus_and_mutations() {
    smoke("entity_json", entity_json::check);
}

#[test]
fn t03_batch_multipart_survives_its_corpus_and_mutations() {
    smoke("batch_multipart", batch_multipart::check);
}
