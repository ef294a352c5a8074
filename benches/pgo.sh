#!/usr/bin/env bash
# Profile-guided build of `logcensus`: the release build, compiled again with the branch and
# call counts of a training run, so that the compiler lays out the hot paths (parsing, the
# User-Agent and referrer caches, the visitor records) for the way they are taken. On the 1M-line
# benchmark it takes about a tenth off the CPU time of a run (see benches/README.md,
# 2026-12-05 14:20), with byte-identical output.
#
#   bash benches/pgo.sh        # prints the built binary's path as its last line
#
# Steps (about 20 minutes on 2 cores the first time; afterwards only what changed):
#   1. an instrumented build (`-Cprofile-generate`) into $CARGO_TARGET_DIR/pgo-gen, in the
#      `dist` profile (Cargo.toml: the release profile with fat LTO and one code unit);
#   2. training runs of it on logs generated here (seed 7: not the benchmark's logs, whose seed
#      is 42) with the committed test database, in the layouts and through the paths a
#      deployment uses: `combined` with the address index (internal-daily), gzip with
#      differential privacy (partner-dp), k-anonymity (partner-daily), traffic quality only
#      (ops-hourly), nginx JSON lines, `validate` and `audit`. Kafka streaming is not trained
#      (it needs a broker); its per-line work is the batch run's. Training on GeoLite2 instead
#      made no difference on the GeoLite2 benchmark (2026-12-05 15:30: -4.4 ms wall, +1.8 ms
#      CPU, 15 alternating pairs), so the build depends on nothing outside the repository;
#   3. the counts merged with `llvm-profdata` (rustup's llvm-tools when installed, else
#      Debian's llvm-N, installed if missing);
#   4. the optimised build (`-Cprofile-use`) into $CARGO_TARGET_DIR/pgo-use, copied to
#      $CARGO_TARGET_DIR/pgo/logcensus.
# When the instrumented binary and the training (this script, the pipelines) are those of the
# last build, steps 2 to 4 are skipped.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

target_dir="${CARGO_TARGET_DIR:-$root/target}"
pgo="$target_dir/pgo"
host="$(rustc -vV | sed -n 's/^host: //p')"
llvm_major="$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"

# llvm-profdata to merge the counts: rustup's own (the same LLVM as rustc) when installed, else
# the newest Debian llvm-N. An older LLVM reads a newer one's raw profiles while their format
# version is the same (LLVM 19's reads rustc 1.95's, LLVM 22's); when it cannot, the newest
# llvm-N Debian has is installed and tried (root only).
newest_profdata() {
  ls -d /usr/lib/llvm-*/bin/llvm-profdata 2>/dev/null | sort -t- -k2 -n | tail -n 1
}
install_newest_llvm() {
  if [[ $(id -u) != 0 ]]; then
    echo "pgo.sh: no llvm-profdata that reads rustc's profiles (LLVM $llvm_major); install rustup's llvm-tools component or a recent Debian llvm-N" >&2
    exit 2
  fi
  apt-get update -qq
  local newest
  newest="$(apt-cache search --names-only '^llvm-[0-9]+$' | cut -d' ' -f1 | sort -t- -k2 -n | tail -n 1)"
  echo "installing llvm-profdata (Debian package ${newest:-llvm-19})" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${newest:-llvm-19}" >/dev/null
}
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [[ ! -x "$profdata" ]]; then
  profdata="$(newest_profdata)"
  if [[ -z "$profdata" ]]; then
    install_newest_llvm
    profdata="$(newest_profdata)"
  fi
fi

mkdir -p "$pgo"
echo "building logcensus-fixtures (release) and an instrumented logcensus (pgo-gen)" >&2
cargo build --release --quiet -p logcensus-fixtures
fixtures="$target_dir/release/logcensus-fixtures"
# `--target` keeps the flags off build scripts and procedural macros, which run on the host.
CARGO_TARGET_DIR="$target_dir/pgo-gen" \
  RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$pgo/raw" \
  cargo build --profile dist --quiet --target "$host" -p logcensus
gen="$target_dir/pgo-gen/$host/dist/logcensus"

# What the profile depends on: the instrumented code and the training runs.
stamp="$(sha256sum "$gen" benches/pgo.sh pipelines/*.toml pipelines/policies/* | cut -c1-64 |
  sha256sum | cut -c1-16)"
if [[ -x "$pgo/logcensus" && -f "$pgo/stamp" && "$(cat "$pgo/stamp")" == "$stamp" ]]; then
  echo "the profile-guided build is up to date" >&2
  echo "$pgo/logcensus"
  exit 0
fi

train="$pgo/train"
rm -rf "$pgo/raw" "$train"
mkdir -p "$train"
db="$root/fixtures/geoip/logcensus-test-city.mmdb"
echo "training on generated logs (seed 7) with the test database" >&2
log() {
  "$fixtures" log --seed 7 --user-agents 500 --addresses test --malformed 0.001 "$@" 2>/dev/null
}
log --lines 300000 --visitors 60000 --format combined --out "$train/combined.log"
log --lines 100000 --visitors 20000 --format combined --out "$train/combined.log.gz"
log --lines 100000 --visitors 20000 --format json --out "$train/nginx.jsonl"
head -c 32 /dev/urandom | base64 >"$train/visitor.key"
# The JSON pipeline: internal-daily reading nginx's JSON lines (its policy named by its full
# path; the command line gives the rest).
sed -e 's/^format = "combined"/format = "json"\njson_preset = "nginx"/' \
  -e 's/^name = "internal-daily"/name = "internal-daily-json"/' \
  -e "s|^policy = \"policies/|policy = \"$root/pipelines/policies/|" \
  pipelines/internal-daily.toml >"$train/json.toml"
if ! grep -q '^json_preset = "nginx"' "$train/json.toml"; then
  echo "pgo.sh: pipelines/internal-daily.toml no longer has the format = \"combined\" line this script rewrites for the JSON training run; update the script" >&2
  exit 1
fi

train_run() {
  local pipeline="$1" input="$2" out="$3"
  shift 3
  "$gen" run --pipeline "$pipeline" --input "$input" --out "$train/$out" --no-progress \
    --visitor-key-file "$train/visitor.key" --geoip "$db" "$@" >/dev/null 2>"$train/$out.err" || {
    cat "$train/$out.err" >&2
    exit 1
  }
}
"$gen" geoip-index --pipeline pipelines/internal-daily.toml --geoip "$db" \
  --out "$train/geoip.idx" >/dev/null
"$gen" validate --pipeline pipelines/internal-daily.toml >/dev/null 2>&1 || true
for _ in 1 2; do
  rm -rf "$train/internal"
  train_run pipelines/internal-daily.toml "$train/combined.log" internal \
    --geoip-index "$train/geoip.idx"
done
train_run pipelines/partner-dp.toml "$train/combined.log.gz" partner-dp
train_run pipelines/partner-daily.toml "$train/combined.log" partner
train_run pipelines/ops-hourly.toml "$train/combined.log.gz" ops
train_run "$train/json.toml" "$train/nginx.jsonl" json
"$gen" audit "$train/partner" --pipeline pipelines/partner-daily.toml >/dev/null 2>&1 || true

merge() {
  echo "merging the counts ($profdata)" >&2
  "$profdata" merge -o "$pgo/merged.profdata" "$pgo/raw"/*.profraw 2>"$train/merge.err"
}
if ! merge; then
  cat "$train/merge.err" >&2
  echo "pgo.sh: $profdata cannot read rustc's (LLVM $llvm_major) profiles; trying the newest Debian llvm-N" >&2
  install_newest_llvm
  profdata="$(newest_profdata)"
  merge || {
    cat "$train/merge.err" >&2
    echo "pgo.sh: $profdata cannot read them either; install rustup's llvm-tools component" >&2
    exit 1
  }
fi
# Named by its content, so that cargo sees new flags, and rebuilds, whenever the counts change.
profile="$pgo/profile-$(sha256sum "$pgo/merged.profdata" | cut -c1-16).profdata"
mv "$pgo/merged.profdata" "$profile"
find "$pgo" -maxdepth 1 -name 'profile-*.profdata' ! -path "$profile" -delete

echo "building the profile-guided logcensus (pgo-use)" >&2
CARGO_TARGET_DIR="$target_dir/pgo-use" \
  RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$profile -Cllvm-args=-pgo-warn-missing-function=false" \
  cargo build --profile dist --quiet --target "$host" -p logcensus
cp "$target_dir/pgo-use/$host/dist/logcensus" "$pgo/logcensus"
echo "$stamp" >"$pgo/stamp"
echo "$pgo/logcensus"
