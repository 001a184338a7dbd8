//! Single-thread encode throughput of a `tokenizer.json` on a text file's blank-line-separated
//! documents, without Python: `cargo run --release --example bpe_bench -- tokenizer.json corpus.txt`.

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
    for _ in 0..5 {
        let (start, cpu) = (Instant::now(), cpu_ns());
        let mut n = 0;
        for d in &docs {
            n += t.encode(d, &AllowedSpecial::None).expect("encodes").len();
        }
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
