#!/bin/bash
# Instructions of one warm encoding pass of the Rust byte-level BPE encoder, under callgrind: a
# figure that does not depend on what else runs on the machine.
#
#   cargo build --release --example bpe_bench -p alignfw-core
#   benchmarks/bpe_instructions.sh target/release/examples/bpe_bench tokenizer.json corpus.txt
#
# Runs the example with 1 and with 3 passes; half the difference is one warm pass (the first pass
# fills the piece cache; loading the file and the pre-tokenizer-only timing cancel out).
set -euo pipefail
if [ $# -ne 3 ]; then
    echo "usage: $0 BPE_BENCH_BINARY TOKENIZER_JSON CORPUS" >&2
    exit 2
fi
bin=$1 json=$2 corpus=$3
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 2; }
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$json" "$corpus" "$1" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
one=$(count 1)
three=$(count 3)
echo "$bin on $json: $(( (three - one) / 2 )) instructions per warm pass (1 pass: $one, 3 passes: $three)"
