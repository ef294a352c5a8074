#!/usr/bin/env bash
# End-to-end benchmark: a whole `logcensus run` over generated combined logs of 1M (and, with
# --full, 10M) lines, with its lines per second and peak memory, against `wc -l` (the cost of
# just reading the file) and, when installed, GoAccess 1.7 on the same file.
#
#   bash benches/e2e.sh [--full] [--install-goaccess | --no-goaccess] [--instructions] [--no-pgo]
#
# logcensus is the profile-guided build of benches/pgo.sh (about 20 minutes on 2 cores the first
# time, then reused while the code is unchanged), as a release would be built; --no-pgo times
# the plain `cargo build --release` binary instead.
#
# GoAccess is slow (about 7 minutes for 10M lines on 2 cores): --no-goaccess skips it.
#
# --instructions also counts the instructions and the mispredicted branches (valgrind's model)
# of the same run on one worker under callgrind (installs the Debian package valgrind when
# missing; about 40 s for 1M lines, so logs of more than 1M lines are skipped): per line, and
# the functions that take most instructions, figures that do not move with the machine's load
# as wall times do, for comparing two builds on a busy or shared machine.
#
# Environment:
#   LINES                  line counts to run, space-separated (default 1000000; --full adds
#                          10000000)
#   BENCH_DATA             where generated logs are kept and reused (default target/bench-data)
#   LOGCENSUS_BENCH_MMDB   a real GeoIP database (e.g. GeoLite2-City.mmdb) for logcensus
#                          --geoip and GoAccess --geoip-database; never commit one. Without it,
#                          logcensus uses the pipeline's test database and GoAccess none.
#   GEOIP_INDEX            on (default): `logcensus geoip-index` makes the database's address
#                          index once (its time is printed) and each run is given it
#                          (--geoip-index); off: runs look addresses up in the database alone
#   THREADS                logcensus --threads (default: logcensus's own, one per core)
#   PAGE_CACHE             reread (default): each log is dropped from the page cache and read
#                          back before it is timed, so that every run sees the state of a file
#                          read from disk (see the comment where it is done); as-is: read it
#                          into the cache as it is (in a log just generated, `wc -l` is about
#                          a third slower)
#   RUNS                   runs of logcensus and of `wc -l` per log, alternately (default 5):
#                          the median wall time of each is reported (this machine class's speed
#                          moves from run to run, and `wc -l`'s hundredths of a second most of
#                          all); GoAccess runs once
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

usage() {
  # The comment block at the top of this file.
  awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
}

full=0
install_goaccess=0
goaccess=1
instructions=0
pgo=1
for arg in "$@"; do
  case "$arg" in
    --full) full=1 ;;
    --no-pgo) pgo=0 ;;
    --instructions) instructions=1 ;;
    --install-goaccess) install_goaccess=1 ;;
    --no-goaccess) goaccess=0 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "e2e.sh: unknown option $arg" >&2; usage >&2; exit 2 ;;
  esac
done

lines_list="${LINES:-1000000}"
if [[ $full == 1 && -z "${LINES:-}" ]]; then
  lines_list="1000000 10000000"
fi
data_dir="${BENCH_DATA:-$root/target/bench-data}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
pipeline="pipelines/internal-daily.toml"
mmdb="${LOGCENSUS_BENCH_MMDB:-}"
page_cache="${PAGE_CACHE:-reread}"
geoip_index="${GEOIP_INDEX:-on}"
case "$geoip_index" in
  on | off) ;;
  *) echo "e2e.sh: GEOIP_INDEX=$geoip_index: use on or off" >&2; exit 2 ;;
esac
case "$page_cache" in
  reread | as-is) ;;
  *) echo "e2e.sh: PAGE_CACHE=$page_cache: use reread or as-is" >&2; exit 2 ;;
esac

apt_install() {
  if [[ $(id -u) != 0 ]]; then
    echo "e2e.sh: $1 is missing; install the Debian package \`$1\` (needs root)" >&2
    exit 2
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

# GNU time, for peak RSS (`-v`); bash's `time` keyword does not report memory.
if [[ ! -x /usr/bin/time ]]; then
  echo "installing GNU time (Debian package time)" >&2
  apt_install time
fi
if [[ $install_goaccess == 1 ]] && ! command -v goaccess >/dev/null; then
  echo "installing GoAccess (Debian package goaccess)" >&2
  apt_install goaccess
fi
if [[ $instructions == 1 ]] && ! command -v valgrind >/dev/null; then
  echo "installing valgrind (Debian package valgrind)" >&2
  apt_install valgrind
fi
if [[ -n "$mmdb" && ! -r "$mmdb" ]]; then
  echo "e2e.sh: LOGCENSUS_BENCH_MMDB=$mmdb is not a readable file" >&2
  exit 2
fi

fixtures="$target_dir/release/logcensus-fixtures"
if [[ $pgo == 1 ]]; then
  # pgo.sh builds logcensus-fixtures too; the plain logcensus is not needed.
  echo "building logcensus-fixtures (release) and the profile-guided logcensus (benches/pgo.sh)" >&2
  logcensus="$(bash "$root/benches/pgo.sh" | tail -n 1)"
  build_note="profile-guided release build (benches/pgo.sh)"
else
  echo "building logcensus and logcensus-fixtures (release)" >&2
  cargo build --release --quiet -p logcensus -p logcensus-fixtures
  logcensus="$target_dir/release/logcensus"
  build_note="release build"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# A fixed key for the run: without one logcensus warns that counts will not merge across runs.
head -c 32 /dev/urandom | base64 >"$tmp/visitor.key"

# Wall seconds of the last `timed NAME`, measured here in nanoseconds: GNU time prints only
# hundredths, too coarse for `wc -l`.
elapsed_s() {
  cat "$tmp/$1.wall"
}
peak_mib() {
  awk -F': ' '/Maximum resident set size/ { printf "%.0f", $2 / 1024 }' "$1"
}
cpu_s() {
  awk -F': ' '/User time|System time/ { s += $2 } END { printf "%.2f", s }' "$1"
}

# timed NAME CMD...: runs CMD under GNU time (peak RSS, CPU time in $tmp/NAME.time) and records
# its wall time in $tmp/NAME.wall; its stdout and stderr go to $tmp/NAME.{out,err}.
timed() {
  local name="$1" start end
  shift
  start="$(date +%s%N)"
  if ! /usr/bin/time -v -o "$tmp/$name.time" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err"; then
    echo "e2e.sh: $name failed: $*" >&2
    cat "$tmp/$name.err" >&2
    exit 1
  fi
  end="$(date +%s%N)"
  awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", (b - a) / 1e9 }' >"$tmp/$name.wall"
}

# The median of the numbers on stdin, one per line.
median() {
  sort -n | awk '{ w[NR] = $1 } END {
    printf "%.3f", (NR % 2) ? w[(NR + 1) / 2] : (w[NR / 2] + w[NR / 2 + 1]) / 2 }'
}

# timed_alternating A B: runs the commands in the arrays `first` (as A) and `second` (as B) one
# after the other, RUNS times; A.wall and B.wall then hold their median wall times, and A.time
# and B.time (CPU time, peak RSS) those of the last runs. Alternating puts both at the same
# moments of the machine, whose speed drifts from minute to minute (the same logcensus run took
# 0.29 s and 0.46 s within the hour): timed one set after the other, a slow spell during
# either set alone moved their ratio.
runs="${RUNS:-5}"
timed_alternating() {
  local a="$1" b="$2" walls_a=() walls_b=()
  for _ in $(seq "$runs"); do
    timed "$a" "${first[@]}"
    walls_a+=("$(cat "$tmp/$a.wall")")
    timed "$b" "${second[@]}"
    walls_b+=("$(cat "$tmp/$b.wall")")
  done
  printf '%s\n' "${walls_a[@]}" | median >"$tmp/$a.wall"
  printf '%s\n' "${walls_b[@]}" | median >"$tmp/$b.wall"
}

rows=()
commands=()
counted=()
index_note="database alone"
if [[ $geoip_index == on ]]; then
  make_index=("$logcensus" geoip-index --pipeline "$pipeline" --out "$tmp/geoip.idx")
  [[ -n "$mmdb" ]] && make_index+=(--geoip "$mmdb")
  timed index "${make_index[@]}"
  commands+=("${make_index[*]}")
  index_note="with its address index (made in $(elapsed_s index) s, $(($(stat -c %s "$tmp/geoip.idx") / 1048576)) MiB)"
fi
row() { rows+=("$(printf '| %10s | %-9s | %8s | %8s | %12s | %9s | %-22s |' "$@")"); }

started="$(date -u +%Y-%m-%dT%H:%MZ)"
busy="$(pgrep -c -x 'rustc|cargo' || true)"
echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)" >&2
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); other cargo/rustc processes: $busy" >&2

for n in $lines_list; do
  log="$data_dir/combined-$n-seed42.log"
  gen=("$fixtures" log --lines "$n" --seed 42 --format combined --user-agents 500
    --visitors 200000 --addresses internet --malformed 0.001 --out "$log")
  if [[ ! -s "$log" ]]; then
    mkdir -p "$data_dir"
    echo "generating $log" >&2
    # Written under a temporary name so that an interrupted run never leaves a short log to reuse.
    gen_tmp=("${gen[@]}")
    gen_tmp[${#gen_tmp[@]} - 1]="$log.tmp"
    "${gen_tmp[@]}" 2>"$tmp/gen.err" || { cat "$tmp/gen.err" >&2; exit 1; }
    mv "$log.tmp" "$log"
  fi
  commands+=("${gen[*]}")
  size_mib="$(($(stat -c %s "$log") / 1048576))"
  # Every tool reads the file from the page cache, and from the same state of it. How the
  # cache holds a file moves `wc -l` by a third: a file just written sits in the pages (folios)
  # its writes made, and one read back from disk in what readahead makes, most likely larger,
  # which the kernel copies out faster (the 1M log: 0.044 s against 0.029 s, same minute). A
  # cached file does not stay in one state either: this machine class pages out what has not
  # been touched for about a minute (a DAMON `pageout` scheme), and what is read back comes in
  # large folios. So the file is dropped from the cache and read back before it is timed:
  # the state of a log read from disk, the one that can be had at any time.
  # (Written back first: the kernel does not drop pages still waiting for the disk.)
  if [[ $page_cache == reread ]]; then
    sync -- "$log"
    dd if="$log" iflag=nocache count=0 status=none
  fi
  cat "$log" >/dev/null
  # The database too is read into the cache (pages of it may have been paged out since the
  # last run): a run that waits on the disk measures the disk.
  [[ -n "$mmdb" ]] && cat "$mmdb" >/dev/null
  [[ $geoip_index == on ]] && cat "$tmp/geoip.idx" >/dev/null

  out="$tmp/out-$n"
  run=("$logcensus" run --pipeline "$pipeline" --input "$log" --out "$out" --no-progress
    --visitor-key-file "$tmp/visitor.key")
  [[ -n "$mmdb" ]] && run+=(--geoip "$mmdb")
  [[ $geoip_index == on ]] && run+=(--geoip-index "$tmp/geoip.idx")
  [[ -n "${THREADS:-}" ]] && run+=(--threads "$THREADS")
  wc_cmd=(wc -l "$log")
  echo "running logcensus and wc -l on $n lines ($size_mib MiB), alternately" >&2
  first=("${run[@]}")
  second=("${wc_cmd[@]}")
  timed_alternating logcensus wc
  commands+=("${run[*]}" "${wc_cmd[*]}")
  lc_s="$(elapsed_s logcensus)"
  lc_rate="$(awk -v n="$n" -v s="$lc_s" 'BEGIN { printf "%.0f", n / s }')"
  row "$n" logcensus "$lc_s" "$(cpu_s "$tmp/logcensus.time")" "$lc_rate" \
    "$(peak_mib "$tmp/logcensus.time")" "1.00 (baseline)"
  head -n 1 "$tmp/logcensus.out" | sed 's/^/  logcensus: /' >&2

  if [[ $instructions == 1 && $n -le 1000000 ]]; then
    echo "counting the instructions of logcensus on $n lines (callgrind, 1 worker)" >&2
    cg=(valgrind --tool=callgrind --branch-sim=yes --callgrind-out-file="$tmp/callgrind-$n.out"
      "$logcensus" run --pipeline "$pipeline" --input "$log" --out "$tmp/cg-out-$n" --no-progress
      --visitor-key-file "$tmp/visitor.key" --threads 1)
    [[ -n "$mmdb" ]] && cg+=(--geoip "$mmdb")
    [[ $geoip_index == on ]] && cg+=(--geoip-index "$tmp/geoip.idx")
    "${cg[@]}" >"$tmp/callgrind.out" 2>"$tmp/callgrind.err" || {
      cat "$tmp/callgrind.err" >&2
      exit 1
    }
    commands+=("${cg[*]}")
    # Inclusive counts per function; a function's code inlined elsewhere is counted there.
    callgrind_annotate --inclusive=yes --show=Ir "$tmp/callgrind-$n.out" >"$tmp/callgrind-$n.txt"
    total="$(awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }' "$tmp/callgrind-$n.txt")"
    # Mispredicted branches (conditional and indirect), as valgrind's branch predictor model
    # counts them: each costs a modern core about 15 cycles, so a line's cost is more than its
    # instructions.
    mispredicted="$(awk '/^events:/ { for (i = 2; i <= NF; i++) ev[i] = $i }
      /^totals:/ { for (i = 2; i <= NF; i++) if (ev[i] == "Bcm" || ev[i] == "Bim") m += $i; print m; exit }' \
      "$tmp/callgrind-$n.out")"
    counted+=("$n lines: $(awk -v t="$total" -v n="$n" 'BEGIN { printf "%.0f", t / n }') instructions and $(awk -v t="$mispredicted" -v n="$n" 'BEGIN { printf "%.1f", t / n }') mispredicted branches per line ($total and $mispredicted in all); per line, the functions that take most instructions (with what they call):")
    # A function whose code is inlined from several files is listed once per file: its first
    # (largest) line is the whole function.
    while IFS= read -r top; do
      counted+=("$top")
    done < <(grep -E '^ *[0-9,]+ ' "$tmp/callgrind-$n.txt" | grep -v 'PROGRAM TOTALS' |
      sed -nE 's/^ *([0-9,]+) .*[:/ ](logcensus_[a-z_]+::[^ ]*).*$/\1 \2/p' |
      grep -vE 'read_piece|__rust_begin|call_once' | awk '!seen[$2]++' | head -n 25 |
      awk -v n="$n" '{ c = $1; gsub(",", "", c); printf "  %8.1f  %s\n", c / n, $2 }')
  fi

  wc_s="$(elapsed_s wc)"
  row "$n" "wc -l" "$wc_s" "$(cpu_s "$tmp/wc.time")" \
    "$(awk -v n="$n" -v s="$wc_s" 'BEGIN { printf "%.0f", n / (s > 0 ? s : 0.001) }')" \
    "$(peak_mib "$tmp/wc.time")" \
    "$(awk -v a="$lc_s" -v b="$wc_s" 'BEGIN { printf "time x%.1f", a / (b > 0 ? b : 0.001) }')"

  if [[ $goaccess == 1 ]] && command -v goaccess >/dev/null; then
    # JSON output, valid in 1.7. Parsing dominates: HTML, JSON, CSV and --process-and-exit all
    # take the same time (within 2%) on 200,000 of these lines.
    ga=(goaccess "$log" --log-format=COMBINED --no-progress -o "$tmp/goaccess-$n.json")
    [[ -n "$mmdb" ]] && ga+=(--geoip-database="$mmdb")
    echo "running goaccess on $n lines" >&2
    timed goaccess "${ga[@]}"
    commands+=("${ga[*]}")
    ga_s="$(elapsed_s goaccess)"
    row "$n" goaccess "$ga_s" "$(cpu_s "$tmp/goaccess.time")" \
      "$(awk -v n="$n" -v s="$ga_s" 'BEGIN { printf "%.0f", n / s }')" \
      "$(peak_mib "$tmp/goaccess.time")" \
      "$(awk -v a="$lc_s" -v b="$ga_s" 'BEGIN { printf "logcensus x%.2f", b / a }')"
  fi
done

echo
echo "logcensus e2e, started $started, $build_note, $(nproc) cores, other cargo/rustc processes at start: $busy, geoip: ${mmdb:-test database of the pipeline}, $index_note, page cache: $page_cache"
echo
printf '| %10s | %-9s | %8s | %8s | %12s | %9s | %-22s |\n' lines tool wall_s cpu_s lines/s peak_MiB ratio
echo "|-----------:|-----------|---------:|---------:|-------------:|----------:|------------------------|"
printf '%s\n' "${rows[@]}"
echo
echo "wall_s: median of $runs runs for logcensus and wc -l, run alternately (cpu_s and peak_MiB: the last run), one run for goaccess"
echo "ratio: for wc -l, logcensus wall time / wc wall time; for goaccess, logcensus lines/s / goaccess lines/s"
if [[ ${#counted[@]} -gt 0 ]]; then
  echo
  echo "instructions (callgrind, logcensus run --threads 1):"
  printf '  %s\n' "${counted[@]}"
fi
echo
echo "commands:"
printf '  %s\n' "${commands[@]}"
