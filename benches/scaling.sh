#!/usr/bin/env bash
# Multi-core scaling: fanout and the hand-written rayon limit at 1, 2, 4,
# 8 and 16 threads (or up to the machine's cores), on word count (W1),
# csv group-by (W3), Monte Carlo pi (W4) and dispatch (W2), each pair in
# the same loop so that only ratios are compared.
#
# Usage: benches/scaling.sh FANOUT LIMITS [LAMBDA_FIXTURE] [OUT_DIR]
#   FANOUT: a release build of the fanout binary
#   LIMITS: the release build of benches/limits.rs
#           (cargo bench --bench limits --no-run prints its path)
#   LAMBDA_FIXTURE: a release build of tests/fixtures/lambda-rust, for the
#           exec (W5) and lambda (W6) rows
# Prints a markdown table per workload; data goes to OUT_DIR (default
# target/scaling), generated once.
set -euo pipefail
FANOUT=$(realpath "$1")
LIMITS=$(realpath "$2")
FIXTURE=${3:+$(realpath "$3")}
OUT=${4:-target/scaling}
mkdir -p "$OUT"
cd "$OUT"
CORES=$(nproc)
THREADS=""
for t in 1 2 4 8 16 32; do
    if [ "$t" -le "$CORES" ]; then THREADS="$THREADS $t"; fi
done
SIZE=${SIZE:-1GiB}

now() { date +%s.%N; }
calc() { awk "BEGIN { print $1 }"; }
# Wall seconds of a command (its output discarded).
wall() {
    local t0 t1
    t0=$(now)
    "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; "$@" >&2 || true; exit 1; }
    t1=$(now)
    calc "$t1 - $t0"
}

[ -f text.txt ] || "$FANOUT" datasets gen text --size "$SIZE" --seed 1 --out text.txt >/dev/null
[ -f events.csv ] || "$FANOUT" datasets gen csv --rows 10000000 --seed 1 --out events.csv >/dev/null
[ -f range.csv ] || "$FANOUT" datasets gen range --rows 1000 --out range.csv >/dev/null
[ -f tiny.txt ] || awk 'BEGIN { for (i = 0; i < 200000; i++) print "a" }' > tiny.txt

cat > wordcount.toml <<EOF
[input]
path = "text.txt"
chunk_size = "16MiB"
[[stage]]
function = "word_count"
[[stage]]
name = "total"
function = "aggregate"
key = ["word"]
params = { sum = ["count"] }
[output]
path = "wordcount-out.csv"
sort = ["-sum_count", "word"]
limit = 100
mode = "overwrite"
EOF
cat > groupby.toml <<EOF
[input]
path = "events.csv"
chunk_size = "16MiB"
[[stage]]
function = "aggregate"
key = ["country", "category"]
params = { count = true, sum = ["amount"] }
[output]
path = "groupby-out.csv"
sort = ["country", "category"]
mode = "overwrite"
EOF
cat > pi.toml <<EOF
[input]
path = "range.csv"
chunk_size = 16
[[stage]]
function = "pi"
params = { samples = 1000000, seed = 42 }
[[stage]]
name = "total"
function = "aggregate"
key = []
params = { sum = ["inside", "samples"] }
[output]
path = "pi-out.csv"
mode = "overwrite"
EOF
cat > dispatch.toml <<EOF
[input]
path = "tiny.txt"
chunk_size = 1
[[stage]]
function = "burn"
params = { ms = 0 }
[output]
path = "dispatch-out.csv"
mode = "overwrite"
EOF

run() { "$FANOUT" run "$1" --progress never --show 0 --set "platform.concurrency=$2" "${@:3}"; }

echo "machine: $CORES cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
TEXT_MIB=$(( $(stat -c %s text.txt) / 1048576 ))
CSV_MIB=$(( $(stat -c %s events.csv) / 1048576 ))

echo
echo "## W1 word count, $TEXT_MIB MiB text"
echo "| threads | limit s | fanout s | fanout MiB/s | fanout / limit throughput |"
echo "|---|---|---|---|---|"
for t in $THREADS; do
    l=$(RAYON_NUM_THREADS=$t wall "$LIMITS" wordcount text.txt)
    f=$(wall run wordcount.toml "$t")
    printf "| %s | %.2f | %.2f | %.0f | %.2f |\n" "$t" "$l" "$f" "$(calc "$TEXT_MIB / $f")" "$(calc "$l / $f")"
done

echo
echo "## W3 csv group-by, $CSV_MIB MiB, 10 M rows"
echo "| threads | fanout s | fanout MiB/s | speed-up over 1 thread |"
echo "|---|---|---|---|"
base=""
for t in $THREADS; do
    f=$(wall run groupby.toml "$t" --set "stage.0.partitions=$t")
    base=${base:-$f}
    printf "| %s | %.2f | %.0f | %.2f |\n" "$t" "$f" "$(calc "$CSV_MIB / $f")" "$(calc "$base / $f")"
done

echo
echo "## W4 Monte Carlo pi, 1e9 samples in 1,000 rows"
echo "| threads | limit s | fanout s | fanout / limit throughput |"
echo "|---|---|---|---|"
for t in $THREADS; do
    l=$(RAYON_NUM_THREADS=$t wall "$LIMITS" pi 1000 1000000)
    f=$(wall run pi.toml "$t")
    printf "| %s | %.2f | %.2f | %.2f |\n" "$t" "$l" "$f" "$(calc "$l / $f")"
done

echo
echo "## W2 dispatch, 200,000 empty invocations (--no-journal)"
echo "| threads | fanout s | invocations/s |"
echo "|---|---|---|"
for t in $THREADS; do
    f=$(wall run dispatch.toml "$t" --no-journal)
    printf "| %s | %.2f | %.0f |\n" "$t" "$f" "$(calc "200000 / $f")"
done

[ -n "$FIXTURE" ] || exit 0
[ -f tiny-20k.txt ] || head -n 20000 tiny.txt > tiny-20k.txt
[ -f text-2MiB.txt ] || "$FANOUT" datasets gen text --size 2MiB --seed 1 --out text-2MiB.txt >/dev/null
CHUNKS=$(( $(stat -c %s text-2MiB.txt) / 1024 ))
cat > exec.toml <<EOF
[input]
path = "text-2MiB.txt"
chunk_size = "1KiB"
[[stage]]
function = { exec = ["cat"] }
[output]
path = "exec-out.csv"
mode = "overwrite"
EOF
cat > lambda.toml <<EOF
[input]
path = "tiny-20k.txt"
chunk_size = 1
[[stage]]
function = { lambda = ["$FIXTURE"], schema = ["line:utf8", "echoed:bool"] }
[output]
path = "lambda-out.csv"
mode = "overwrite"
EOF
echo
echo "## W5 exec (a cat process per 1 KiB chunk, about $CHUNKS chunks) and W6 lambda (20,000 invocations of the lambda_runtime fixture), --no-journal"
echo "| threads | exec jobs/s | lambda invocations/s |"
echo "|---|---|---|"
for t in $THREADS; do
    e=$(wall run exec.toml "$t" --no-journal)
    l=$(wall run lambda.toml "$t" --no-journal)
    printf "| %s | %.0f | %.0f |\n" "$t" "$(calc "$CHUNKS / $e")" "$(calc "20000 / $l")"
done
