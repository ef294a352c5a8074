#!/usr/bin/env bash
# Installs the Kafka-API test broker (tansu 0.6.0, with the in-memory storage engine) into
# ~/.cargo/bin, unless a tansu 0.6 is already there or on PATH. Idempotent; the Kafka tests
# (crates/kafka/src/testing.rs) find it there. The first install builds from source: about
# 11 minutes on 2 cores and ~1.3 GB of temporary space.
set -euo pipefail

version=0.6.0
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"

for candidate in "$cargo_bin/tansu" tansu; do
  if found=$("$candidate" --version 2>/dev/null) && [[ "$found" == "tansu 0.6."* ]]; then
    echo "tansu: $found already installed ($(command -v "$candidate")); nothing to do"
    exit 0
  fi
done

echo "tansu: installing tansu $version into $cargo_bin (cargo install, about 11 minutes on 2 cores)"
# dynostore provides the memory:// storage engine the test broker uses; default features have none.
cargo install tansu --version "$version" --locked --features dynostore
echo "tansu: installed $("$cargo_bin/tansu" --version)"
