#!/usr/bin/env bash
# Seeds each target's corpus (fuzz/corpus/TARGET, not in git) from the repository's
# fixtures and profiles and from fuzz/seeds. The stream targets read a 3-byte header
# (chunk size, frame limit / 8 with 0 for the default, flag) before the body.
set -euo pipefail
cd "$(dirname "$0")"
repo=..

seed() { # target, header bytes (printf escapes), files...
    local target="$1" header="$2"
    shift 2
    mkdir -p "corpus/$target"
    for file in "$@"; do
        [ -f "$file" ] || continue
        { printf "$header"; cat "$file"; } >"corpus/$target/seed-$(basename "$(dirname "$file")")-$(basename "$file")"
    done
}

seed sse_stream '\007\000\000' "$repo"/fixtures/openai/chat/*.sse "$repo"/fixtures/openai/completions/*.sse
seed sse_stream '\001\040\001' "$repo"/fixtures/openai/chat/think-tags.sse
seed ndjson_stream '\007\000\001' "$repo"/fixtures/ollama/chat/*.ndjson
seed ndjson_stream '\023\000\000' "$repo"/fixtures/ollama/generate/*.ndjson
seed anthropic_stream '\007\000\000' "$repo"/fixtures/anthropic/messages/*.sse
seed profile '' "$repo"/profiles/*.toml
for target in openai_request ollama_request anthropic_request responses_request key_line image_uri; do
    seed "$target" '' seeds/"$target"/*
done
