#!/usr/bin/env bash
# Measures what one request costs the server on the hot paths, with the demo as users run
# it: build/coda-demo with its default --threads (one loop per core) and default store,
# nothing pinned, the access log on (lines go to a file, as with `coda-demo 2>>access.log`)
# and, for comparison, --quiet. wrk -t1 -c64 runs on the same machine.
#
# Routes: GET /plain (no task) and GET /trivial (one trivial THREAD task per request).
# For every route x (log on, --quiet) it prints req/s, the server's CPU time per request
# (utime+stime of /proc/PID/stat, all its threads) and its context switches per request
# (voluntary+nonvoluntary of /proc/PID/task/*/status, summed over its threads), both read
# just before and just after each measured wrk run. Requests served are the delta of the
# server's own /stats counter (wrk's count misses the requests in flight when it stops).
# After a run on /trivial the counters are read once the thread pool is idle, so the tasks
# of the run are charged to it. With the log on it also checks that every request served
# left exactly one access log line.
#
# Then the ratios against the targets of the hot path issue, MET or NOT MET:
#   the access log adds at most 10% to /plain's CPU per request;
#   /trivial costs at most 1.15x /plain's CPU per request and keeps at least 0.9x its req/s
#   (log on);
#   at most 0.1 context switches per request on /plain (log on).
#
# Both servers (log on, --quiet) stay up for the whole run; every round measures the four
# cases one after the other, each after an unmeasured warm-up, and each figure is the
# median over ROUNDS rounds (another build on the same 2 cores moves single runs by 20%).
# Everything listens on 127.0.0.1 on ephemeral ports; the EXIT trap stops what it started
# (TERM, then KILL after 5 s) and removes the temp dir.
#
# Usage: bench/hotpath.sh   (or `make bench-hotpath`)
# Env:   DURATION  seconds per measured run (default 10)
#        ROUNDS    rounds; the median of each figure is reported (default 3)
#        BUILD     build directory holding coda-demo (default build)
#        DEMO_FLAGS more coda-demo flags for both servers, e.g. "--threads 1" (default none)
#        RAW       if set, a directory that receives every wrk output and server log
# Exit status: 0 when every run completed cleanly (the targets do not count), 1 when a
# server failed, wrk saw socket errors or non-2xx responses, or access log lines were lost.
set -euo pipefail

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
WARMUP=2
CONNECTIONS=64
SETTLE_MS=300 # quiet time around each measured run: tasks finish, the log is written
LOG_CPU_MAX=1.10
TRIVIAL_CPU_MAX=1.15
TRIVIAL_RPS_MIN=0.90
PLAIN_CS_MAX=0.10

die() { echo "bench/hotpath.sh: $*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
# Set by name (declare -g) below.
rps_log_plain="" rps_log_trivial="" rps_quiet_plain="" rps_quiet_trivial=""
cpu_log_plain="" cpu_log_trivial="" cpu_quiet_plain="" cpu_quiet_trivial="" cs_log_plain=""

[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a positive number of seconds"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive number"

scripts/deps bench
for tool in wrk curl python3; do
  command -v "$tool" >/dev/null || die "$tool not found (scripts/deps bench installs it)"
done

coda=$BUILD/coda-demo
if [ ! -x "$coda" ]; then
  [ -f "$BUILD/CMakeCache.txt" ] ||
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$BUILD" -j"$(nproc)"
fi
[ -x "$coda" ] || die "$coda was not built"
coda=$(realpath "$coda")

tmp=$(mktemp -d "${TMPDIR:-/tmp}/coda-hotpath.XXXXXX")
servers=() # pids of running servers, for the EXIT trap
failed=0
hz=$(getconf CLK_TCK)

# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
  local pid
  for pid in "${servers[@]}"; do stop_server "$pid" || true; done
  if [ -n "${RAW:-}" ]; then
    mkdir -p "$RAW"
    cp "$tmp"/*.txt "$tmp"/*.log "$RAW"/ 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_demo NAME [FLAGS...]: the demo with its defaults plus FLAGS, run from its own
# directory under tmp (the default store is sqlite:data/coda.db, relative to it), stderr
# appended to tmp/NAME.log (O_APPEND, so the file can be truncated under it). Sets
# pid_NAME and port_NAME.
start_demo() {
  local name=$1 port
  shift
  port=$(free_port)
  mkdir -p "$tmp/$name.dir"
  (cd "$tmp/$name.dir" && exec "$coda" --listen "127.0.0.1:$port" "$@") \
    >>"$tmp/$name.log" 2>&1 &
  servers+=($!)
  declare -g "pid_$name=$!" "port_$name=$port"
  check_server "$name" "$!" "$port" '{"status":"ok"}'
}

# proc_sample PID: prints the CPU ticks (utime+stime of every thread, exited ones
# included) and the context switches (voluntary+nonvoluntary, summed over the live
# threads) of PID so far.
proc_sample() {
  local ticks cs
  ticks=$(sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}')
  # A thread may end between the glob and the read; awk goes on with the others.
  cs=$(awk '/^(non)?voluntary_ctxt_switches:/ {s += $2} END {print s + 0}' \
    "/proc/$1/task/"*/status 2>/dev/null || true)
  echo "$ticks ${cs:-0}"
}

# stats PORT: prints the server's request count and its THREAD tasks queued+running.
stats() {
  curl -s --noproxy '*' --max-time 5 "http://127.0.0.1:$1/stats" |
    python3 -c 'import json, sys; s = json.load(sys.stdin); t = s["tasks"]["thread"]
print(s["requests"], t["queued"] + t["running"])'
}

# settle PORT: waits (up to 5 s) until no THREAD task is queued or running, then
# SETTLE_MS more; prints the request count (the probes included) and how many /stats
# probes it sent.
settle() {
  local requests busy i
  for ((i = 1; i <= 50; i++)); do
    read -r requests busy < <(stats "$1") || die "GET /stats on port $1 failed"
    ((busy == 0)) && break
    sleep 0.1
  done
  sleep "$(awk -v m="$SETTLE_MS" 'BEGIN {print m / 1000}')"
  echo "$requests $((i > 50 ? 50 : i))"
}

# measure NAME ROUTE ROUND: one warm-up, then one measured run; appends
# "rps cpu_us_per_req cs_per_req requests log_lines" to tmp/cells-NAME-ROUTE.
measure() {
  local name=$1 route=$2 round=$3 pid port url out req0 req1 probes t0 t1 c0 c1 requests rps
  local lines=- cpu cs errors
  pid=$(get "pid_$name") port=$(get "port_$name")
  url=http://127.0.0.1:$port/$route
  out=$tmp/wrk-$name-$route-$round.txt
  timeout $((WARMUP + 30)) wrk -t1 -c"$CONNECTIONS" --timeout 5s -d"${WARMUP}s" "$url" \
    >/dev/null 2>&1 || true
  read -r req0 probes < <(settle "$port")
  : >"$tmp/$name.log"
  read -r t0 c0 < <(proc_sample "$pid")
  timeout $((DURATION + 30)) wrk -t1 -c"$CONNECTIONS" --timeout 5s -d"${DURATION}s" "$url" \
    >"$out" 2>&1 || true
  read -r req1 probes < <(settle "$port")
  read -r t1 c1 < <(proc_sample "$pid")
  # req0 counts the probes before the run, req1 those after it as well.
  requests=$((req1 - req0 - probes))
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  cpu=$(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$requests" \
    'BEGIN {printf "%.2f", (n > 0 ? t / hz * 1e6 / n : 0)}')
  cs=$(awk -v c=$((c1 - c0)) -v n="$requests" 'BEGIN {printf "%.3f", (n > 0 ? c / n : 0)}')

  errors=$(grep -E 'Socket errors|Non-2xx' "$out" || true)
  [ -n "$rps" ] || errors+=$'\n'"no Requests/sec in wrk's output"
  kill -0 "$pid" 2>/dev/null || errors+=$'\n'"server exited during the run"
  if [ "$name" = log ]; then
    # Truncated before the run: the measured requests and the probes after it.
    lines=$(grep -c ' - "GET /' "$tmp/$name.log" || true)
    if ((lines != req1 - req0)); then
      errors+=$'\n'"$lines access log lines for $((req1 - req0)) requests"
    fi
    grep -q 'lines dropped' "$tmp/$name.log" && errors+=$'\n'"the logger dropped lines"
  fi
  echo "  round $round, /$route, $name: ${rps:-?} req/s, $requests requests," \
    "$cpu us CPU/req, $cs cs/req" >&2
  if [ -n "$errors" ]; then
    failed=1
    declare -g "err_${name}_$route=!"
    echo "!! /$route, $name:" >&2
    # shellcheck disable=SC2001 # prefixes every line
    sed 's/^/!!   /' <<<"${errors#$'\n'}" >&2
  fi
  echo "${rps:-0} $cpu $cs $requests $lines" >>"$tmp/cells-$name-$route"
}

# median NAME ROUTE COLUMN: the median of one column over the rounds.
median() {
  awk -v c="$3" '{print $c}' "$tmp/cells-$1-$2" | sort -g |
    awk '{v[NR] = $1} END {print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

# verdict VALUE OP LIMIT: MET or NOT MET.
verdict() {
  awk -v v="$1" -v l="$3" -v op="$2" \
    'BEGIN {ok = op == "<=" ? v <= l : v >= l; print ok ? "MET" : "NOT MET"}'
}

echo "coda-demo hot path: GET /plain and GET /trivial, wrk -t1 -c$CONNECTIONS, ${DURATION}s" \
  "per run after ${WARMUP}s warm-up, $ROUNDS rounds, nothing pinned"
echo "$(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}'), $coda, $(nproc) CPUs"
echo

# shellcheck disable=SC2086 # DEMO_FLAGS: words
start_demo log ${DEMO_FLAGS:-}
# shellcheck disable=SC2086
start_demo quiet --quiet ${DEMO_FLAGS:-}
for ((round = 1; round <= ROUNDS; round++)); do
  echo "round $round of $ROUNDS ..." >&2
  for name in log quiet; do
    for route in plain trivial; do
      measure "$name" "$route" "$round"
    done
  done
done
for name in log quiet; do
  stop_server "$(get "pid_$name")" || { echo "!! $name exited with status $?" >&2; failed=1; }
done
grep -E '^(WARNING|ERROR)' "$tmp/log.log" "$tmp/quiet.log" >&2 || true

fmt='%-9s %-8s %10s %12s %9s %14s\n'
# shellcheck disable=SC2059 # fmt is the table layout
printf "$fmt" route log req/s "CPU us/req" cs/req "requests/run"
for route in plain trivial; do
  for name in log quiet; do
    declare -g "rps_${name}_$route=$(median "$name" "$route" 1)" \
      "cpu_${name}_$route=$(median "$name" "$route" 2)" \
      "cs_${name}_$route=$(median "$name" "$route" 3)"
    # shellcheck disable=SC2059
    printf "$fmt" "/$route" "$([ $name = log ] && echo on || echo quiet)" \
      "$(printf %.0f "$(get "rps_${name}_$route")")$(get "err_${name}_$route")" \
      "$(get "cpu_${name}_$route")" "$(get "cs_${name}_$route")" \
      "$(printf %.0f "$(median "$name" "$route" 4)")"
  done
done
echo "  medians of $ROUNDS rounds; every round's req/s, CPU us/req, cs/req:"
for route in plain trivial; do
  for name in log quiet; do
    echo "    /$route $name: $(awk '{printf "%s%.0f/%s/%s", (NR > 1 ? "  " : ""), $1, $2, $3}' \
      "$tmp/cells-$name-$route")"
  done
done
echo

log_cpu=$(ratio "$cpu_log_plain" "$cpu_quiet_plain")
trivial_cpu=$(ratio "$cpu_log_trivial" "$cpu_log_plain")
trivial_rps=$(ratio "$rps_log_trivial" "$rps_log_plain")
echo "targets (log on unless said):"
printf '  %-52s %6s  %s\n' \
  "/plain CPU/req, log on / --quiet <= ${LOG_CPU_MAX}x" "$log_cpu" \
  "$(verdict "${log_cpu%x}" "<=" "$LOG_CPU_MAX")" \
  "/trivial CPU/req / /plain CPU/req <= ${TRIVIAL_CPU_MAX}x" "$trivial_cpu" \
  "$(verdict "${trivial_cpu%x}" "<=" "$TRIVIAL_CPU_MAX")" \
  "/trivial req/s / /plain req/s >= ${TRIVIAL_RPS_MIN}x" "$trivial_rps" \
  "$(verdict "${trivial_rps%x}" ">=" "$TRIVIAL_RPS_MIN")" \
  "/plain context switches per request <= $PLAIN_CS_MAX" "$cs_log_plain" \
  "$(verdict "$cs_log_plain" "<=" "$PLAIN_CS_MAX")"
echo "  (--quiet: /trivial CPU/req / /plain CPU/req = $(ratio "$cpu_quiet_trivial" "$cpu_quiet_plain")," \
  "req/s $(ratio "$rps_quiet_trivial" "$rps_quiet_plain"))"
[ $failed = 0 ] || echo "!! some runs had errors (marked !); see the messages above" >&2
exit $failed
