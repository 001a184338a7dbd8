//! Single-thread encode throughput of a `tokenizer.json` on a text file's blank-line-separated
//! documents, without Python: `cargo run --release --example bpe_bench -- tokenizer.json corpus.txt [passes]`
//! (5 passes by default; the first one fills the piece cache). Under `valgrind --tool=callgrind`, the
//! difference between runs with 1 and 3 passes, halved, is the instruction count of one warm pass;
//! `--toggle-collect=bpe_bench::warm_pass` profiles the warm passes alone.

use std::time::Instant;

use alignfw_core::bpe::{AllowedSpecial, Tokenizer};

/// Nanoseconds this thread has run on a CPU (Linux; 0 elsewhere): a fair figure on a shared machine.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let json = std::fs::read_to_string(&args[1]).expect("tokenizer.json");
    let text = std::fs::read_to_string(&args[2]).expect("corpus");
    let docs: Vec<&str> = text.split("\n\n").collect();
    let passes: usize = args.get(3).map_or(5, |p| p.parse().expect("passes: a number"));
    let t = Tokenizer::from_json(&json).expect("a byte-level BPE");
    let mb = text.len() as f64 / (1 << 20) as f64;
    if let Some(p) = t.pattern() {
        // The pre-tokenizer alone, for comparison.
        let p = alignfw_core::bpe::Pattern::from_name_or_regex(p).expect("pattern");
        let (start, cpu) = (Instant::now(), cpu_ns());
        let mut n = 0usize;
        for d in &docs {
            p.split(d, &mut |piece| n += piece.len()).expect("splits");
        }
        let c = (cpu_ns() - cpu) as f64 * 1e-9;
        let s = start.elapsed().as_secs_f64();
        println!(
            "pre-tokenizer only: {:.1} MiB/s CPU, {:.1} MiB/s wall ({n} bytes)",
            mb / c,
            mb / s
        );
    }
    for pass in 0..passes {
        let (start, cpu) = (Instant::now(), cpu_ns());
        let n = if pass == 0 {
            cold_pass(&t, &docs)
        } else {
            warm_pass(&t, &docs)
        };
        let s = start.elapsed().as_secs_f64();
        let c = (cpu_ns() - cpu) as f64 * 1e-9;
        println!(
            "{:.1} MiB/s CPU, {:.1} MiB/s wall ({n} tokens, {} documents)",
            mb / c,
            mb / s,
            docs.len()
        );
    }
}

/// Encodes every document; returns the number of tokens. The first pass (cache filling) and the
/// others are separate functions so that a profiler can tell them apart.
fn encode_all(t: &Tokenizer, docs: &[&str]) -> usize {
    docs.iter()
        .map(|d| t.encode(d, &AllowedSpecial::None).expect("encodes").len())
        .sum()
}

#[inline(never)]
fn cold_pass(t: &Tokenizer, docs: &[&str]) -> usize {
    // Not the same machine code as `warm_pass`, which the linker would otherwise fold into this one.
    encode_all(t, docs) + std::hint::black_box(0)
}

#[inline(never)]
fn warm_pass(t: &Tokenizer, docs: &[&str]) -> usize {
    encode_all(t, docs)
}
