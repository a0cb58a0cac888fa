#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 30), seeding the corpora first.
#   fuzz/run.sh 30               CI budget, one target at a time
#   FUZZ_JOBS=2 fuzz/run.sh 600  two targets at a time
# A crash, a panic, a hang over 10 s or an input needing over 2 GB fails the run; the input
# lands in fuzz/artifacts/TARGET/. Each target's summary (runs, time) is in
# fuzz/artifacts/TARGET.log. Installs cargo-fuzz when it is missing; needs nightly.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-30}"
jobs="${FUZZ_JOBS:-1}"

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
./seed.sh
# Built once, then each target's binary runs as it is: sources edited while the targets
# run do not rebuild them half-way.
# No AddressSanitizer: diglot has no unsafe code, and what fuzzing finds in safe Rust
# (panics, hangs, memory blow-ups) shows without it, in a build that is quicker to make
# and to run.
cargo +nightly fuzz build -O --sanitizer none
bin="target/$(rustc +nightly -vV | sed -n 's/^host: //p')/release"
mkdir -p artifacts

run_one() {
    local target="$1" seconds="$2" log="artifacts/$1.log"
    mkdir -p "artifacts/$target"
    if "$bin/$target" "corpus/$target" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="artifacts/$target/" >"$log" 2>&1; then
        echo "$target: $(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$log" | tail -1)"
    else
        echo "$target: FAILED (see fuzz/$log)"
        tail -30 "$log"
        return 1
    fi
}
export -f run_one
export bin

cargo +nightly fuzz list | xargs -P "$jobs" -I{} bash -c "run_one {} $seconds"
