#!/usr/bin/env bash
# Benchmarks coda-demo's GET /plain side by side with nginx serving the same response, in
# one run, and prints requests/s, p99 latency and the coda/nginx ratio.
#
# One-core comparison: each server runs one event loop (coda --threads 1, nginx
# worker_processes 1) pinned to CPU 1 while wrk is pinned to CPU 0, so the servers get the
# same single core and do not compete with the load generator. Cases: keep-alive requests
# one at a time, and 16 requests pipelined per write (bench/pipeline.lua). nginx and coda are
# measured in alternation, each run after an unmeasured warm-up. A run during which other
# processes used the CPU (machine time not charged to the server or wrk) is repeated, up to
# 3 runs, and flagged if it stays disturbed.
# Server-bound: the same one-core plain case with both servers held to CAP% of their core
# by a CPU cgroup (quota per 10 ms), so that the server, not wrk, is the limit: on two
# cores wrk needs about as much CPU per request as a fast server and caps the plain case.
# Needs root and a cgroup cpu controller (v1 or v2); skipped otherwise.
# Scaling: coda --threads 2 against --threads 1, all unpinned with wrk -t2. On a 2-core
# machine wrk shares those cores, so the factor is a lower bound.
#
# Everything it starts listens on 127.0.0.1 on ephemeral ports, and the EXIT trap stops it
# (TERM, then KILL after 5 s) and removes the temp dir.
#
# Usage: bench/http.sh   (or `make bench`)
# Env:   DURATION  seconds per measured run (default 10)
#        ROUNDS    alternated nginx/coda rounds of the one-core cases; the median round of
#                  each server is reported (default 3: the VM's noise swings single runs by
#                  20% either way)
#        CAP       % of a core the server-bound case gives each server (default 70; 0 skips)
#        BUILD     build directory holding coda-demo (default build)
#        RAW       if set, a directory that receives every wrk output and server log
# Exit status: 0 when every run completed cleanly, 1 when a server failed or wrk saw
# socket errors or non-2xx responses (the table is still printed).
set -euo pipefail

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CAP=${CAP:-70}
WARMUP=2
CONNECTIONS=64
DEPTH=16
TARGET=1.2
SERVER_CPU=1
CLIENT_CPU=0
OTHER_MAX=20   # % of a core used outside the server and wrk that makes a run disturbed
TRIES=3        # runs per case at most while they are disturbed

die() { echo "bench/http.sh: $*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a positive number of seconds"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive number"
{ [[ $CAP =~ ^[0-9]+$ ]] && ((CAP <= 100)); } || die "CAP must be a percentage (0 skips the case)"

scripts/deps bench
for tool in wrk nginx curl taskset python3; do
  command -v "$tool" >/dev/null || die "$tool not found (scripts/deps bench installs it)"
done
[ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs (server on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU)"

coda=$BUILD/coda-demo
if [ ! -x "$coda" ]; then
  [ -f "$BUILD/CMakeCache.txt" ] ||
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$BUILD" -j"$(nproc)"
fi
[ -x "$coda" ] || die "$coda was not built"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/coda-bench.XXXXXX")
servers=()   # pids of running servers, for the EXIT trap
failed=0
rounds_text=""
busy_runs=()  # runs during which something besides the server and wrk used the CPU
cgroup=""     # the CPU cgroup of the server-bound case, removed by the EXIT trap


# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
  local pid
  for pid in "${servers[@]}"; do stop_server "$pid" || true; done
  [ -z "$cgroup" ] || rmdir "$cgroup" 2>/dev/null || true
  if [ -n "${RAW:-}" ]; then
    mkdir -p "$RAW"
    cp "$tmp"/*.txt "$tmp"/*.log "$tmp/nginx.conf" "$RAW"/ 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM



# start_coda NAME THREADS [CPU]: sets pid_NAME and port_NAME.
start_coda() {
  local name=$1 threads=$2 pin=() port
  [ $# -lt 3 ] || pin=(taskset -c "$3")
  port=$(free_port)
  "${pin[@]}" "$coda" --listen "127.0.0.1:$port" --threads "$threads" --store memory --quiet \
    >"$tmp/$name.log" 2>&1 &
  servers+=($!)
  declare -g "pid_$name=$!" "port_$name=$port"
  check_server "$name" "$!" "$port" '{"status":"ok"}'
}

# start_nginx NAME CPU: sets pid_NAME and port_NAME.
start_nginx() {
  local name=$1 port user=""
  port=$(free_port)
  # A root master switches its workers to `user`; root keeps the temp dir readable without
  # depending on which unprivileged accounts exist. Non-root masters ignore the directive.
  [ "$(id -u)" -ne 0 ] || user="user root;"
  sed -e "s|@PREFIX@|$tmp|g" -e "s|@PORT@|$port|g" -e "s|@USER@|$user|g" \
    bench/nginx.conf.in >"$tmp/nginx.conf"
  taskset -c "$2" nginx -p "$tmp/" -c "$tmp/nginx.conf" -e "$tmp/nginx-error.log" \
    -g 'daemon off;' >"$tmp/$name.log" 2>&1 &
  servers+=($!)
  declare -g "pid_$name=$!" "port_$name=$port"
  check_server "$name" "$!" "$port" '{"status":"ok"}'
}





# make_cgroup: creates a CPU cgroup allowing CAP% of one core (quota per 10 ms periods)
# and sets `cgroup` to its directory; returns 1 (with a reason in cap_skip) when it cannot.
make_cgroup() {
  local v1=/sys/fs/cgroup/cpu v2=/sys/fs/cgroup
  [ "$(id -u)" -eq 0 ] || { cap_skip="not root"; return 1; }
  if [ -f "$v1/cpu.cfs_quota_us" ]; then
    cgroup=$v1/coda-bench-$$
    mkdir "$cgroup" && echo 10000 >"$cgroup/cpu.cfs_period_us" &&
      echo $((CAP * 100)) >"$cgroup/cpu.cfs_quota_us" && return 0
  elif grep -qw cpu "$v2/cgroup.controllers" 2>/dev/null; then
    echo +cpu >"$v2/cgroup.subtree_control" 2>/dev/null || true
    cgroup=$v2/coda-bench-$$
    mkdir "$cgroup" && echo "$((CAP * 100)) 10000" >"$cgroup/cpu.max" && return 0
  fi
  cap_skip="no writable cgroup cpu controller"
  return 1
}

# cap_server NAME: moves the server NAME and its worker processes into `cgroup`.
cap_server() {
  local pid
  for pid in $(get "pid_$1") $(pgrep -P "$(get "pid_$1")" 2>/dev/null || true); do
    echo "$pid" >"$cgroup/cgroup.procs"
  done
}

# wrk_once NAME CPU|- THREADS MODE OUT: one warm-up and one measured run into OUT; sets
# run_cpu, run_wrk and run_other, the CPU time of the server, of wrk and of everything else
# (kernel work charged to no process, and other processes) in % of one core.
wrk_once() {
  local name=$1 cpu=$2 threads=$3 mode=$4 out=$5 pid port pin=() args=() extra=() url
  local server0 server1 client0 client1 machine0 machine1
  pid=$(get "pid_$name") port=$(get "port_$name")
  url=http://127.0.0.1:$port/plain
  [ "$cpu" = - ] || pin=(taskset -c "$cpu")
  args=(-t"$threads" -c"$CONNECTIONS" --timeout 5s)
  [ "$mode" = plain ] || { args+=(-s bench/pipeline.lua); extra=(-- "$DEPTH"); }

  timeout $((WARMUP + 30)) "${pin[@]}" wrk "${args[@]}" -d"${WARMUP}s" "$url" "${extra[@]}" \
    >/dev/null 2>&1 || true
  server0=$(cpu_ticks "$pid")
  children_ticks >"$tmp/ticks"
  client0=$(<"$tmp/ticks")
  machine0=$(machine_ticks)
  timeout $((DURATION + 30)) "${pin[@]}" wrk "${args[@]}" -d"${DURATION}s" --latency \
    "$url" "${extra[@]}" >"$out" 2>&1 || true
  server1=$(cpu_ticks "$pid")
  children_ticks >"$tmp/ticks"
  client1=$(<"$tmp/ticks")
  machine1=$(machine_ticks)

  run_cpu=$(percent $((server1 - server0)))
  run_wrk=$(percent $((client1 - client0)))
  run_other=$(percent $((machine1 - machine0 - (server1 - server0) - (client1 - client0))))
}

# wrk_run NAME CPU|- THREADS MODE: measures one case, again (up to TRIES runs) while other
# processes took more than OTHER_MAX of a core, then sets rps_NAME_MODE, p99_NAME_MODE,
# cpu_NAME_MODE and wrkcpu_NAME_MODE and flags errors.
wrk_run() {
  local name=$1 mode=$4 out=$tmp/wrk-$1-$4.txt try rps p99 errors
  for ((try = 1; try <= TRIES; try++)); do
    wrk_once "$@" "$out"
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    echo "  $name, $mode: ${rps:-?} req/s; CPU: server ${run_cpu}%, wrk ${run_wrk}%," \
      "other ${run_other}%" >&2
    ((run_other > OTHER_MAX)) || break
    grep -qE 'Socket errors|Non-2xx' "$out" && break
  done
  ((run_other <= OTHER_MAX)) || busy_runs+=("$name $mode (${run_other}% of a core)")

  p99=$(awk 'function ms(v) {
               if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0
               if (v ~ /m$/) return v * 60000; if (v ~ /s$/) return v * 1000
               return v + 0 }
             # wrk 4.1 sometimes prints 0.00us for high percentiles of pipelined runs
             # (wg/wrk#236); report that as unknown rather than as zero.
             $1 == "99%" {v = ms($2); if (v > 0) printf "%.2fms", v; else print "n/a"}' "$out")
  declare -g "rps_${name}_$mode=${rps:-0}" "p99_${name}_$mode=${p99:--}" \
    "cpu_${name}_$mode=$run_cpu" "wrkcpu_${name}_$mode=$run_wrk"
  echo "${rps:-0} ${p99:--} $run_cpu $run_wrk" >>"$tmp/rounds-$name-$mode"

  errors=$(grep -E 'Socket errors|Non-2xx' "$out" || true)
  if ! kill -0 "$(get "pid_$name")" 2>/dev/null; then
    errors+=$'\n'"server exited during the run (see its log below)"
  fi
  if [ -z "$rps" ]; then
    errors+=$'\n'"no Requests/sec in wrk's output"
  fi
  if [ -n "$errors" ]; then
    failed=1
    declare -g "err_${name}_$mode=!"
    echo "!! $name, $mode: wrk reported:" >&2
    # shellcheck disable=SC2001 # prefixes every line
    sed 's/^/!!   /' <<<"${errors#$'\n'}" >&2
    echo "!!   full wrk output:" >&2
    sed 's/^/!!   | /' "$out" >&2
  fi
}


echo "coda vs nginx, GET /plain: $CONNECTIONS connections, ${DURATION}s per run after" \
  "${WARMUP}s warm-up, pipelined depth $DEPTH"
echo "$(nginx -v 2>&1 | sed 's/.*: //'), $(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}'), $coda," \
  "$(nproc) CPUs"
echo

# median_round NAME MODE: sets the figures of NAME's median round (by req/s), and
# round_list to every round's req/s.
median_round() {
  local f=$tmp/rounds-$1-$2 n rps p99 cpu wrk
  n=$(wc -l <"$f")
  read -r rps p99 cpu wrk < <(sort -n -k1,1 "$f" | sed -n "$(((n + 1) / 2))p")
  declare -g "rps_$1_$2=$rps" "p99_$1_$2=$p99" "cpu_$1_$2=$cpu" "wrkcpu_$1_$2=$wrk"
  round_list=$(awk '{printf "%s%.0f", (NR > 1 ? " " : ""), $1}' "$f")
}

# One core: servers on CPU 1, wrk -t1 on CPU 0, nginx and coda measured in alternation,
# ROUNDS times; each server's median round counts.
start_nginx nginx "$SERVER_CPU"
start_coda coda 1 "$SERVER_CPU"
for mode in plain pipelined; do
  for ((round = 1; round <= ROUNDS; round++)); do
    echo "running 1 core, $mode, round $round of $ROUNDS ..." >&2
    wrk_run nginx "$CLIENT_CPU" 1 "$mode"
    wrk_run coda "$CLIENT_CPU" 1 "$mode"
  done
  median_round nginx "$mode"
  rounds_text+="  rounds, 1 core, $mode (req/s): nginx $round_list;"
  median_round coda "$mode"
  rounds_text+=" coda $round_list"$'\n'
done
grep -E '\[(alert|emerg|crit|error)\]' "$tmp/nginx-error.log" >&2 || true
stop_server "$(get pid_nginx)" || { echo "!! nginx exited with status $?" >&2; failed=1; }
stop_server "$(get pid_coda)" || { echo "!! coda --threads 1 exited with status $?" >&2; failed=1; }
grep -vE '^INFO' "$tmp/coda.log" >&2 || true

# Server-bound: both servers held to CAP% of CPU 1, alternated like the one-core case.
cap_skip=""
if ((CAP == 0)); then
  cap_skip="CAP=0"
elif make_cgroup; then
  start_nginx nginxcap "$SERVER_CPU"
  start_coda codacap 1 "$SERVER_CPU"
  cap_server nginxcap
  cap_server codacap
  for ((round = 1; round <= ROUNDS; round++)); do
    echo "running 1 core capped at $CAP%, plain, round $round of $ROUNDS ..." >&2
    wrk_run nginxcap "$CLIENT_CPU" 1 plain
    wrk_run codacap "$CLIENT_CPU" 1 plain
  done
  median_round nginxcap plain
  rounds_text+="  rounds, capped at $CAP% (req/s): nginx $round_list;"
  median_round codacap plain
  rounds_text+=" coda $round_list"$'\n'
  for name in nginxcap codacap; do
    stop_server "$(get "pid_$name")" || { echo "!! $name exited with status $?" >&2; failed=1; }
  done
fi

# Scaling: coda with two loops against one, everything unpinned, wrk -t2.
start_coda coda1 1
start_coda coda2 2
for mode in plain pipelined; do
  echo "running scaling, $mode ..." >&2
  wrk_run coda1 - 2 "$mode"
  wrk_run coda2 - 2 "$mode"
done
for name in coda1 coda2; do
  stop_server "$(get "pid_$name")" || { echo "!! $name exited with status $?" >&2; failed=1; }
  grep -vE '^INFO' "$tmp/$name.log" >&2 || true
done

echo
fmt='%-18s %11s %11s %6s %9s %9s %9s %9s %9s %9s\n'
# shellcheck disable=SC2059 # fmt is the table layout
printf "$fmt" case "nginx req/s" "coda req/s" ratio "nginx p99" "coda p99" "nginx cpu" "coda cpu" \
  "wrk cpu" "ratio/cpu"
met=1 ratios="" notes=()
for mode in plain pipelined; do
  n=$(get "rps_nginx_$mode") c=$(get "rps_coda_$mode")
  cn=$(get "cpu_nginx_$mode") cc=$(get "cpu_coda_$mode")
  r=$(ratio "$c" "$n")
  # Requests per second of server CPU: what each server would do on a fully busy core.
  per_cpu=$(ratio "$(awk -v r="$c" -v u="$cc" 'BEGIN {print (u > 0 ? r / u : 0)}')" \
    "$(awk -v r="$n" -v u="$cn" 'BEGIN {print (u > 0 ? r / u : 0)}')")
  # shellcheck disable=SC2059
  printf "$fmt" "1 core, $mode" "$n$(get "err_nginx_$mode")" "$c$(get "err_coda_$mode")" "$r" \
    "$(get "p99_nginx_$mode")" "$(get "p99_coda_$mode")" "$cn%" "$cc%" \
    "$(get "wrkcpu_nginx_$mode")/$(get "wrkcpu_coda_$mode")%" "$per_cpu"
  awk -v a="$c" -v b="$n" -v t="$TARGET" 'BEGIN {exit !(b > 0 && a / b >= t)}' || met=0
  ratios+="${ratios:+, }$mode $r"
  for name in nginx coda; do
    if (($(get "wrkcpu_${name}_$mode") >= 90)); then
      notes+=("1 core, $mode: wrk used $(get "wrkcpu_${name}_$mode")% of its core against\
 $name (whose core was $(get "cpu_${name}_$mode")% busy), so the client may cap this case")
    fi
  done
done
if [ -z "$cap_skip" ]; then
  n=$(get rps_nginxcap_plain) c=$(get rps_codacap_plain)
  # shellcheck disable=SC2059
  printf "$fmt" "capped $CAP%, plain" "$n$(get err_nginxcap_plain)" \
    "$c$(get err_codacap_plain)" "$(ratio "$c" "$n")" "$(get p99_nginxcap_plain)" \
    "$(get p99_codacap_plain)" "$(get cpu_nginxcap_plain)%" "$(get cpu_codacap_plain)%" \
    "$(get wrkcpu_nginxcap_plain)/$(get wrkcpu_codacap_plain)%" "-"
  notes+=("capped $CAP%: each server held to $CAP% of its core by a CPU cgroup, so the server,\
 not wrk, is the limit (compare wrk cpu): the per-core speed of the two servers")
else
  notes+=("capped case skipped: $cap_skip")
fi
if grep -q 'n/a' <<<"$(get p99_nginx_pipelined)$(get p99_coda_pipelined)"; then
  notes+=("n/a: wrk printed 0.00us for p99 (its pipelined latency bug, wg/wrk#236)")
fi
echo "  cpu: server and wrk (nginx run/coda run) CPU time in % of one core;" \
  "ratio/cpu: coda/nginx req/s per second of server CPU"
echo "  each figure is the server's median of $ROUNDS alternated rounds:"
printf '%s' "$rounds_text"
for note in "${notes[@]}"; do echo "  note: $note"; done
echo
for mode in plain pipelined; do
  one=$(get "rps_coda1_$mode") two=$(get "rps_coda2_$mode")
  echo "scaling, $mode: coda --threads 2 / --threads 1 = $(ratio "$two" "$one")" \
    "($two / $one req/s$(get "err_coda1_$mode")$(get "err_coda2_$mode"))"
done
echo "  (unpinned, wrk -t2 on the same $(nproc) cores: wrk competes with the server, so" \
  "this understates scaling)"
echo
[ -n "$cap_skip" ] ||
  ratios+=", server-bound (capped $CAP%) $(ratio "$(get rps_codacap_plain)" "$(get rps_nginxcap_plain)")"
echo "target: coda >= ${TARGET}x nginx on one core: $([ $met = 1 ] && echo MET || echo NOT MET)" \
  "($ratios)"
if ((${#busy_runs[@]})); then
  echo "warning: other processes used the CPU during $(printf '%s, ' "${busy_runs[@]}" |
    sed 's/, $//') even after $TRIES tries; those numbers are unreliable"
fi
[ $failed = 0 ] || echo "!! some runs had errors (marked !); see the messages above" >&2
exit $failed
