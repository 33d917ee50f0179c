#!/usr/bin/env bash
# Benchmarks coda's background tasks in one run and prints one table with a MET/NOT MET
# line per target:
#
#  1. coda-demo GET /trivial (response + one trivial THREAD task) against its own GET
#     /plain: the task should cost little (>= 0.9x the req/s).
#  2. the same route in FastAPI on uvicorn (bench/fastapi_trivial.py, a BackgroundTasks
#     task that counts itself) against coda: >= 25x.
#  3. the same route in Kore (bench/kore_trivial.c, a kore_task that counts itself)
#     against coda: >= 3x.
#     1-3 run one server at a time on one core: each server (its event loop, task threads
#     and worker processes: coda --threads 1, uvicorn one worker, Kore `workers 1`) is
#     pinned to CPU 1, wrk -t1 -c64 to CPU 0, as bench/http.sh does. Cases are measured
#     in alternation after an unmeasured warm-up; a run during which other processes used
#     the CPU is repeated (up to 3 runs) and flagged if it stays disturbed. Afterwards
#     each server must have run one task per /trivial response (checked through its
#     /stats), so nobody wins by dropping tasks.
#  4. bench/task_cost.c: the cost of adding and dispatching tasks inside a real coda app
#     (N THREAD tasks: add + dispatch under 1 us each; N PROCESS tasks: under 20 us each
#     amortized), for a response's list in its default order and marked parallel.
#  5. bench/latency.c: GET /plain p99 at a fixed rate (2000 req/s) with the PROCESS pool
#     idle, then saturated with cpu_heavy_task (a second client keeps /process/ tasks
#     queued, so the workers, at nice 19 (SCHED_BATCH), never rest): saturated p99 within 2x of idle.
#     coda-demo (one loop, its worker process) is pinned to CPU 1, the clients to CPU 0,
#     so the worker competes with the event loop for the same core.
#
# Everything listens on 127.0.0.1 on ephemeral ports; the EXIT trap stops every process
# it started (TERM, then KILL after 5 s) and removes the temp dir.
#
# Usage: bench/tasks.sh   (or `make bench-tasks`)
# Env:   DURATION  seconds per measured run (default 10: the whole run takes about 2.5
#                  minutes, more when disturbed runs are repeated; DURATION=5 about 2)
#        RATE      requests/s of the latency runs (default 2000)
#        BUILD     build directory (default build)
#        PYTHON    the Python that has Debian's fastapi and uvicorn (default /usr/bin/python3)
#        RAW       if set, a directory that receives every raw output and server log
# Needs: wrk, curl, taskset (scripts/deps bench); python3-fastapi python3-uvicorn (and
# python3-uvloop python3-httptools, which uvicorn uses when present) for case 2; kore
# for case 3. A missing competitor's rows say why and are not counted as failures.
# Exit status: 0 when every run completed cleanly (whether or not targets are met), 1
# when a server failed, a client saw errors or a server did not run its tasks.
set -euo pipefail

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
DURATION=${DURATION:-10}
RATE=${RATE:-2000}
PYTHON=${PYTHON:-/usr/bin/python3}
WARMUP=2
CONNECTIONS=64
SERVER_CPU=1
CLIENT_CPU=0
OTHER_MAX=20   # % of a core used outside the server and the clients that makes a run disturbed
TRIES=3        # runs per case at most while they are disturbed
BACKLOG=4      # PROCESS tasks kept queued by the saturating client

die() { echo "bench/tasks.sh: $*" >&2; exit 1; }

[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a positive number of seconds"
[[ $RATE =~ ^[1-9][0-9]*$ ]] || die "RATE must be a positive number of requests/s"

scripts/deps bench
for tool in wrk curl taskset python3 cc; do
  command -v "$tool" >/dev/null || die "$tool not found (scripts/deps bench installs it)"
done
[ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs (servers on CPU $SERVER_CPU, clients on CPU $CLIENT_CPU)"

coda=$BUILD/coda-demo
task_cost=$BUILD/bench/task_cost
latency=$BUILD/bench/latency
if [ ! -x "$coda" ] || [ ! -x "$task_cost" ] || [ ! -x "$latency" ]; then
  [ -f "$BUILD/CMakeCache.txt" ] ||
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$BUILD" -j"$(nproc)" --target coda-demo task_cost latency
fi
for bin in "$coda" "$task_cost" "$latency"; do [ -x "$bin" ] || die "$bin was not built"; done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/coda-bench-tasks.XXXXXX")
servers=()    # pids of running servers and background clients, for the EXIT trap
failed=0
busy_runs=()  # runs during which something besides the server and clients used the CPU
problems=()   # errors worth a line under the table
# shellcheck source=bench/lib.sh disable=SC1091 # run from the repository root
. bench/lib.sh

# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
  local pid
  for pid in "${servers[@]}"; do stop_server "$pid" || true; done
  if [ -n "${RAW:-}" ]; then
    mkdir -p "$RAW"
    cp "$tmp"/*.txt "$tmp"/*.log "$tmp"/*.conf "$RAW"/ 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Removes a pid that has ended from `servers`.
forget() {
  local rest=() p
  for p in "${servers[@]}"; do [ "$p" = "$1" ] || rest+=("$p"); done
  servers=("${rest[@]}")
}

problem() {
  failed=1
  problems+=("$*")
  echo "!! $*" >&2
}

# ---- servers -------------------------------------------------------------------------

# start_server NAME PLAIN_BODY COMMAND...: runs COMMAND (which must listen on $port) pinned
# to SERVER_CPU; sets pid_NAME and port_NAME.
start_server() {
  local name=$1 want=$2
  shift 2
  taskset -c "$SERVER_CPU" "$@" >"$tmp/$name.log" 2>&1 &
  servers+=($!)
  declare -g "pid_$name=$!" "port_$name=$port"
  check_server "$name" "$!" "$port" "$want"
}

start_coda() {
  port=$(free_port)
  start_server "$1" '{"status":"ok"}' "$coda" --listen "127.0.0.1:$port" --threads 1 --store memory --quiet
}

# FastAPI, if Debian's packages are there; otherwise sets skip_fastapi to the reason.
start_fastapi() {
  skip_fastapi=""
  if ! "$PYTHON" -c 'import fastapi, uvicorn' 2>/dev/null; then
    skip_fastapi="$PYTHON cannot import fastapi and uvicorn (apt-get install python3-fastapi python3-uvicorn)"
    return
  fi
  fastapi_version=$("$PYTHON" -c 'import fastapi, uvicorn; print("FastAPI", fastapi.__version__, "on uvicorn", uvicorn.__version__)')
  local extras=()
  "$PYTHON" -c 'import uvloop' 2>/dev/null && extras+=(uvloop) || extras+=("asyncio loop: no python3-uvloop")
  "$PYTHON" -c 'import httptools' 2>/dev/null && extras+=(httptools) || extras+=("h11 parser: no python3-httptools")
  local joined
  joined=$(IFS=,; echo "${extras[*]}")
  fastapi_version+=" (${joined//,/, })"
  port=$(free_port)
  start_server fastapi '{"status":"ok"}' "$PYTHON" -m uvicorn fastapi_trivial:app \
    --app-dir bench --host 127.0.0.1 --port "$port" --workers 1 \
    --log-level warning --no-access-log
}

# Kore, built from bench/kore_trivial.c against the kore package; otherwise sets
# skip_kore to the reason.
start_kore() {
  skip_kore=""
  if ! command -v kore >/dev/null || [ ! -f /usr/share/kore/features ] ||
    [ ! -f /usr/include/kore/kore.h ]; then
    skip_kore="kore, its headers or /usr/share/kore/features missing (apt-get install kore)"
    return
  fi
  kore_version="Kore $(kore -v 2>&1 | head -n1)"
  # The flags the package was built with (struct layouts depend on them), as kodev uses.
  # shellcheck disable=SC2046 # the file is a list of compiler flags
  if ! cc -O2 -fPIC -shared $(cat /usr/share/kore/features) -o "$tmp/kore_trivial.so" \
    bench/kore_trivial.c 2>"$tmp/kore-build.log"; then
    skip_kore="building the Kore module failed: $(grep -m1 -i error "$tmp/kore-build.log" || head -n1 "$tmp/kore-build.log")"
    return
  fi
  port=$(free_port)
  local nofile
  nofile=$(ulimit -Hn)
  [ "$nofile" = unlimited ] || ((nofile > 65536)) && nofile=65536
  nofile=$((nofile - 64)) # Kore adds a few descriptors of its own to the setting
  sed -e "s|@DIR@|$tmp|g" -e "s|@PORT@|$port|g" -e "s|@NOFILE@|$nofile|g" \
    bench/kore.conf.in >"$tmp/kore.conf"
  # -f foreground, -n no chroot, -r keep the user: a private, unprivileged-style instance.
  start_server kore '{"status":"ok"}' kore -c "$tmp/kore.conf" -fnr
}

# ---- throughput (cases 1-3) -------------------------------------------------------------

# Requests wrk completed, from its output.
wrk_requests() { awk '/requests in/ {print $1; exit}' "$1" 2>/dev/null || true; }

# wrk_once NAME ROUTE OUT: one warm-up and one measured run of GET /ROUTE into OUT; adds
# the requests of both to sent_NAME_ROUTE; sets run_cpu, run_wrk and run_other (CPU time of the server, of
# wrk and of everything else, in % of one core).
wrk_once() {
  local name=$1 route=$2 out=$3 pid port url n
  local server0 server1 client0 client1 machine0 machine1 steal0 steal1
  local args=(-t1 -c"$CONNECTIONS" --timeout 5s)
  pid=$(get "pid_$name") port=$(get "port_$name")
  url=http://127.0.0.1:$port/$route
  timeout $((WARMUP + 30)) taskset -c "$CLIENT_CPU" wrk "${args[@]}" -d"${WARMUP}s" "$url" \
    >"$out.warm" 2>&1 || true
  n=$(wrk_requests "$out.warm")
  declare -g "sent_${name}_$route=$(($(get "sent_${name}_$route") + ${n:-0}))"
  server0=$(cpu_ticks "$pid")
  children_ticks >"$tmp/ticks"
  client0=$(<"$tmp/ticks")
  machine0=$(machine_ticks)
  steal0=$(steal_ticks)
  timeout $((DURATION + 30)) taskset -c "$CLIENT_CPU" wrk "${args[@]}" -d"${DURATION}s" \
    --latency "$url" >"$out" 2>&1 || true
  server1=$(cpu_ticks "$pid")
  children_ticks >"$tmp/ticks"
  client1=$(<"$tmp/ticks")
  machine1=$(machine_ticks)
  steal1=$(steal_ticks)
  n=$(wrk_requests "$out")
  declare -g "sent_${name}_$route=$(($(get "sent_${name}_$route") + ${n:-0}))"
  run_cpu=$(percent $((server1 - server0)))
  run_wrk=$(percent $((client1 - client0)))
  run_other=$(percent $((machine1 - machine0 - (server1 - server0) - (client1 - client0))))
  run_steal=$(percent $((steal1 - steal0)))
}

# wrk_run NAME ROUTE: measures GET /ROUTE on server NAME (again, up to TRIES runs, while
# disturbed); sets rps_NAME_ROUTE, p99_NAME_ROUTE, cpu_NAME_ROUTE, wrkcpu_NAME_ROUTE.
wrk_run() {
  local name=$1 route=$2 key=$1_$2 out=$tmp/wrk-$1-$2.txt try rps p99 errors
  [ -n "$(get "sent_$key")" ] || declare -g "sent_$key=0"
  for ((try = 1; try <= TRIES; try++)); do
    wrk_once "$name" "$route" "$out"
    rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$out")
    echo "  $name /$route: ${rps:-?} req/s; CPU: server ${run_cpu}%, wrk ${run_wrk}%," \
      "other ${run_other}% (steal ${run_steal}%)" >&2
    ((run_other > OTHER_MAX)) || break
    grep -qE 'Socket errors|Non-2xx' "$out" && break
  done
  ((run_other <= OTHER_MAX)) || busy_runs+=("$name /$route (${run_other}% of a core)")
  p99=$(awk 'function ms(v) {
               if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0
               if (v ~ /m$/) return v * 60000; if (v ~ /s$/) return v * 1000
               return v + 0 }
             $1 == "99%" {printf "%.2fms", ms($2)}' "$out")
  declare -g "rps_$key=${rps:-0}" "p99_$key=${p99:--}" "cpu_$key=$run_cpu" \
    "wrkcpu_$key=$run_wrk"
  errors=$(grep -E 'Socket errors|Non-2xx' "$out" || true)
  kill -0 "$(get "pid_$name")" 2>/dev/null ||
    errors+=$'\n'"server exited during the run (see its log below)"
  [ -n "$rps" ] || errors+=$'\n'"no Requests/sec in wrk's output"
  if [ -n "$errors" ]; then
    declare -g "err_$key=!"
    problem "$name /$route: ${errors#$'\n'}"
    sed 's/^/!!   | /' "$out" >&2
    echo "!!   $name's log, last lines:" >&2
    tail -n 20 "$tmp/$name.log" | sed 's/^/!!   | /' >&2
  fi
}

# tasks_ran NAME: the number of /trivial tasks the server says it ran.
tasks_ran() {
  local port body
  port=$(get "port_$1")
  body=$(curl -s --noproxy '*' --max-time 5 "http://127.0.0.1:$port/stats" || true)
  case $1 in
    coda) python3 -c 'import json, sys
t = json.loads(sys.argv[1])["tasks"]["thread"]
bad = t["failed"] + t["dropped"] + t["rejected"]
print(t["succeeded"] if bad == 0 else -bad)' "$body" 2>/dev/null || echo "?" ;;
    *) python3 -c 'import json, sys; print(json.loads(sys.argv[1])["runs"])' "$body" \
      2>/dev/null || echo "?" ;;
  esac
}

# check_tasks NAME: every /trivial response wrk counted must have had its task run; waits
# up to 15 s for a backlog to drain. Sets tasks_NAME to "ran/responses".
check_tasks() {
  local name=$1 sent ran i
  sent=$(get "sent_${name}_trivial")
  for ((i = 0; i < 150; i++)); do
    ran=$(tasks_ran "$name")
    [[ $ran =~ ^[0-9]+$ ]] && ((ran >= sent)) && break
    sleep 0.1
  done
  declare -g "tasks_$name=$ran/$sent"
  if ! [[ $ran =~ ^[0-9]+$ ]]; then
    problem "$name: /stats reports failed, dropped or rejected tasks (or is unreadable): $ran"
  elif ((ran < sent)); then
    problem "$name ran $ran tasks for $sent /trivial responses"
  fi
}

# ---- latency (case 5) ---------------------------------------------------------------------

# latency_run MODE ROUND: GET /plain at RATE on the `lat` server, with the PROCESS pool
# idle or saturated (MODE idle|sat), again (up to TRIES runs) while disturbed; leaves the
# latencies in $tmp/samples-MODE-ROUND.txt and sets cpu_lat_MODE and busy_sat.
latency_run() {
  local mode=$1 round=$2 out=$tmp/latency-$1-$2.txt sat=$tmp/saturate-$2.txt try satpid=""
  local port pid server0 server1 client0 client1 machine0 machine1 steal0 t0 t1 secs
  port=$(get port_lat) pid=$(get pid_lat)
  for ((try = 1; try <= TRIES; try++)); do
    server0=$(cpu_ticks "$pid")
    children_ticks >"$tmp/ticks"
    client0=$(<"$tmp/ticks")
    machine0=$(machine_ticks)
    steal0=$(steal_ticks)
    t0=$(date +%s.%N)
    if [ "$mode" = sat ]; then
      taskset -c "$CLIENT_CPU" "$latency" --port "$port" --saturate /process/ \
        --backlog "$BACKLOG" --seconds $((DURATION + 3)) >"$sat" 2>&1 &
      satpid=$!
      servers+=("$satpid")
      sleep 1 # the queue fills and the worker starts its first task
    fi
    taskset -c "$CLIENT_CPU" "$latency" --port "$port" --path /plain --rate "$RATE" \
      --seconds "$DURATION" --warmup 1 --samples "$tmp/samples-$mode-$round.txt" \
      >"$out" 2>&1 || problem "latency client, $mode: errors: $(grep -v RESULT "$out")"
    if [ -n "$satpid" ]; then
      wait "$satpid" || problem "saturating client: errors: $(grep -v RESULT "$sat" | head -n3)"
      forget "$satpid"
      satpid=""
    fi
    t1=$(date +%s.%N)
    server1=$(cpu_ticks "$pid")
    children_ticks >"$tmp/ticks"
    client1=$(<"$tmp/ticks")
    machine1=$(machine_ticks)
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')
    run_cpu=$(percent $((server1 - server0)) "$secs")
    run_other=$(percent $((machine1 - machine0 - (server1 - server0) - (client1 - client0))) "$secs")
    echo "  latency $mode #$round: p99 $(awk '$2 == "p99_us" {print $3}' "$out") us;" \
      "CPU: server ${run_cpu}%, clients $(percent $((client1 - client0)) "$secs")%," \
      "other ${run_other}% (steal $(percent $(($(steal_ticks) - steal0)) "$secs")%)" >&2
    ((run_other > OTHER_MAX)) || break
  done
  ((run_other <= OTHER_MAX)) || busy_runs+=("latency $mode #$round (${run_other}% of a core)")
  grep -v '^RESULT' "$out" | sed "s/^/    /" >&2
  declare -g "cpu_lat_$mode=$run_cpu"
  if [ "$mode" = sat ]; then
    grep -v '^RESULT' "$sat" | sed 's/^/    /' >&2
    # The lowest share over the rounds: every round must have kept the workers busy.
    local busy
    busy=$(awk '$2 == "busy_pct" {print $3}' "$sat")
    if [ -z "${busy_sat:-}" ] || awk -v a="$busy" -v b="$busy_sat" 'BEGIN {exit !(a < b)}'; then
      busy_sat=${busy:-0}
    fi
  fi
}

# pooled MODE: p50, p99, p99.9 and max (us) over every round's samples of MODE; sets
# p50_MODE, p99_MODE, p999_MODE, max_MODE and n_MODE.
pooled() {
  local mode=$1 stats
  stats=$(cat "$tmp"/samples-"$mode"-*.txt | sort -n | awk '{v[NR] = $1}
    function at(p,  i) {i = int(p / 100 * NR) + 1; if (i > NR) i = NR; return v[i]}
    END {if (NR) print at(50), at(99), at(99.9), v[NR], NR; else print "0 0 0 0 0"}')
  read -r "p50_$mode" "p99_$mode" "p999_$mode" "max_$mode" "n_$mode" <<<"$stats"
}

# ---- run ----------------------------------------------------------------------------------

echo "coda background tasks: ${DURATION}s per run after ${WARMUP}s warm-up, wrk -t1" \
  "-c$CONNECTIONS on CPU $CLIENT_CPU, servers on CPU $SERVER_CPU, $(nproc) CPUs"

# Cases 1-3: one server at a time is busy; they all idle on CPU 1 in between.
start_coda coda
start_fastapi
start_kore
echo "$(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}'); $coda;" \
  "${fastapi_version:-FastAPI not run}; ${kore_version:-Kore not run}"
echo
[ -z "$skip_fastapi" ] || echo "!! FastAPI not run: $skip_fastapi" >&2
[ -z "$skip_kore" ] || echo "!! Kore not run: $skip_kore" >&2
frameworks=(coda)
[ -n "$skip_kore" ] || frameworks+=(kore)
[ -n "$skip_fastapi" ] || frameworks+=(fastapi)
for route in plain trivial; do
  for name in "${frameworks[@]}"; do
    echo "running $name /$route ..." >&2
    wrk_run "$name" "$route"
  done
done
for name in "${frameworks[@]}"; do
  check_tasks "$name"
  stop_server "$(get "pid_$name")" || problem "$name exited with status $?"
done
grep -vE '^INFO' "$tmp/coda.log" >&2 || true

# Case 4: the cost of adding and dispatching tasks, inside a real coda app (unpinned: the
# loop, the THREAD pool and the PROCESS workers use every CPU).
echo "running task_cost ..." >&2
for ((try = 1; try <= TRIES; try++)); do
  children_ticks >"$tmp/ticks"
  client0=$(<"$tmp/ticks")
  machine0=$(machine_ticks)
  t0=$(date +%s.%N)
  "$task_cost" --thread-n 10000 --process-n 2000 --rounds 11 >"$tmp/task_cost.txt" 2>&1 ||
    { cat "$tmp/task_cost.txt" >&2; problem "task_cost failed"; break; }
  t1=$(date +%s.%N)
  children_ticks >"$tmp/ticks"
  client1=$(<"$tmp/ticks")
  machine1=$(machine_ticks)
  run_other=$(percent $((machine1 - machine0 - (client1 - client0))) \
    "$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')")
  grep -v '^RESULT' "$tmp/task_cost.txt" | sed 's/^/  /' >&2
  echo "  task_cost: other ${run_other}% of a core" >&2
  ((run_other > OTHER_MAX)) || break
done
((run_other <= OTHER_MAX)) || busy_runs+=("task_cost (${run_other}% of a core)")
cost() { awk -v k="$1" '$1 == "RESULT" && $2 == k {print $3}' "$tmp/task_cost.txt"; }

# Case 5: latency, PROCESS pool idle and then saturated.
start_coda lat
workers=$(pgrep -P "$(get pid_lat)" | paste -sd, -)
worker_nice=$(for w in ${workers//,/ }; do ps -o ni= -p "$w"; done | tr -d ' ' | sort -u |
  paste -sd, -)
echo "running latency (coda-demo on CPU $SERVER_CPU, worker processes ${workers:-none}," \
  "nice ${worker_nice:-?}) ..." >&2
# Alternated, so that a slow drift of the machine's background load hits both modes.
for round in 1 2; do
  latency_run idle "$round"
  latency_run sat "$round"
done
pooled idle
pooled sat
stop_server "$(get pid_lat)" || problem "coda-demo (latency) exited with status $?"
grep -vE '^INFO' "$tmp/lat.log" >&2 || true

# ---- the table ------------------------------------------------------------------------------

verdict() { # verdict EXPR: MET when the awk expression is true
  awk "BEGIN {exit !($1)}" && echo MET || echo "NOT MET"
}
us() { awk -v v="${1:-}" 'BEGIN {if (v == "") print "-"; else printf "%.2f us", v / 1000}'; }

echo
row() { printf '%-40s %16s %16s %9s %9s  %s\n' "$@"; }
row "benchmark" "coda" "against" "ratio" "target" "result"
c_plain=$(get rps_coda_plain) c_triv=$(get rps_coda_trivial)
r=$(ratio "$c_triv" "$c_plain")
row "1. /trivial vs /plain, req/s (1 core)" "$c_triv${err_coda_trivial:-}" \
  "$c_plain${err_coda_plain:-}" "$r" ">= 0.9x" "$(verdict "$c_plain > 0 && $c_triv / $c_plain >= 0.9")"
if [ -z "$skip_fastapi" ]; then
  f=$(get rps_fastapi_trivial)
  row "2. /trivial: coda vs FastAPI, req/s" "$c_triv" "$f${err_fastapi_trivial:-}" \
    "$(ratio "$c_triv" "$f")" ">= 25x" "$(verdict "$f > 0 && $c_triv / $f >= 25")"
else
  row "2. /trivial: coda vs FastAPI, req/s" "$c_triv" "not run" "-" ">= 25x" \
    "NOT RUN: $skip_fastapi"
fi
if [ -z "$skip_kore" ]; then
  k=$(get rps_kore_trivial)
  row "3. /trivial: coda vs Kore, req/s" "$c_triv" "$k${err_kore_trivial:-}" \
    "$(ratio "$c_triv" "$k")" ">= 3x" "$(verdict "$k > 0 && $c_triv / $k >= 3")"
else
  row "3. /trivial: coda vs Kore, req/s" "$c_triv" "not run" "-" ">= 3x" \
    "NOT RUN: $skip_kore"
fi
for order in ordered parallel; do
  v=$(cost "thread_${order}_total_ns")
  row "4. THREAD task add+dispatch, $order" "$(us "$v")" \
    "(add $(us "$(cost "thread_${order}_add_ns")"))" "-" "< 1 us" \
    "$(verdict "${v:-1e9} < 1000")"
done
for order in ordered parallel; do
  v=$(cost "process_${order}_total_ns")
  row "4. PROCESS task amortized, $order" "$(us "$v")" \
    "(add $(us "$(cost "process_${order}_add_ns")"))" "-" "< 20 us" \
    "$(verdict "${v:-1e9} < 20000")"
done
i99=$(get p99_idle) s99=$(get p99_sat)
row "5. /plain p99 @ $RATE/s: saturated vs idle" "${s99} us" "${i99} us" \
  "$(ratio "$s99" "$i99")" "<= 2x" "$(verdict "$i99 > 0 && $s99 <= 2 * $i99")"

echo
echo "  1-3 detail (req/s, p99, server CPU %, tasks run/responses):"
for name in "${frameworks[@]}"; do
  printf '    %-8s /plain %8s %9s %4s%%   /trivial %8s %9s %4s%%   trivial/plain %s   tasks %s\n' \
    "$name" "$(get "rps_${name}_plain")" "$(get "p99_${name}_plain")" \
    "$(get "cpu_${name}_plain")" "$(get "rps_${name}_trivial")" \
    "$(get "p99_${name}_trivial")" "$(get "cpu_${name}_trivial")" \
    "$(ratio "$(get "rps_${name}_trivial")" "$(get "rps_${name}_plain")")" \
    "$(get "tasks_$name")"
done
for name in "${frameworks[@]}"; do
  for route in plain trivial; do
    if (($(get "wrkcpu_${name}_$route") >= 90)); then
      echo "    note: wrk used $(get "wrkcpu_${name}_$route")% of its core against $name" \
        "/$route, so the client may cap that case"
    fi
  done
done
echo "  4 detail: N = $(cost thread_ordered_n) THREAD, $(cost process_ordered_n) PROCESS" \
  "tasks added by one handler; ordered = the default list (each task starts when the" \
  "one before it ends), parallel = CODA_LIST_PARALLEL; total = add + dispatch and run," \
  "per task, median of 11 rounds"
echo "  5 detail: 2 x ${DURATION}s per mode, alternated, $(get n_idle)/$(get n_sat) samples" \
  "pooled; p50 idle $(get p50_idle) us, saturated $(get p50_sat) us; p99.9 idle" \
  "$(get p999_idle) us, saturated $(get p999_sat) us; max idle $(get max_idle) us," \
  "saturated $(get max_sat) us; workers busy with work waiting in >= ${busy_sat:-?}% of" \
  "polls; server CPU (loop + worker) ${cpu_lat_idle:-?}% idle, ${cpu_lat_sat:-?}% saturated;" \
  "worker nice ${worker_nice:-?}"
if awk -v b="${busy_sat:-0}" 'BEGIN {exit !(b < 90)}'; then
  problem "the PROCESS pool was not saturated during the latency run (${busy_sat:-?}% of polls)"
fi
if ((${#busy_runs[@]})); then
  echo "warning: other processes used the CPU during $(printf '%s, ' "${busy_runs[@]}" |
    sed 's/, $//') even after $TRIES tries; those numbers are unreliable"
fi
for p in "${problems[@]}"; do echo "!! $p"; done
exit $failed
