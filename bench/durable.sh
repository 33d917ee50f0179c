#!/usr/bin/env bash
# Benchmarks coda's durable tasks in one run and prints one table with a MET/NOT MET line
# per target:
#
#  1. Throughput: durable tasks accepted and completed per second with the SQLite store,
#     fsync on (WAL, synchronous FULL: coda's default), target >= 50,000/s; the memory
#     store beside it.
#     a. Library path: bench/durable_bench.c enqueue mode. A real coda app with one durable
#        THREAD task that increments an atomic counter; a producer thread calls
#        coda_app_enqueue() N times (default 200,000); accepted = coda_app_store_sync()
#        returned (all committed and fsynced), completed = the counter reached N, both
#        timed from the first enqueue. Unpinned: the producer, the event loop, the store
#        thread and the THREAD pool share both CPUs. A fresh database in a fresh dir per
#        run; ROUNDS runs per store, alternated; median and range.
#     b. HTTP path, one core: durable_bench serve (--threads 1, pinned to CPU 1 with its
#        store thread and THREAD pool), wrk -t1 -cCONNECTIONS on CPU 0 against GET
#        /durable (a 202 whose durable task is committed before the response is sent),
#        against the same app's GET /memory (the same task, in memory), and against
#        /durable of an app with the memory store. accepted = 2xx responses/s;
#        completed = the measured run's tasks / time from its start until /count says
#        they have all run.
#     c. HTTP path, the whole machine: the same with --threads 2 and wrk -t2, all
#        unpinned (wrk shares the two CPUs with the server).
#  2. Latency: GET /durable vs GET /memory of one durable_bench server (sqlite store,
#     pinned to CPU 1) at RATE req/s from bench/latency.c (CPU 0; constant rate, no
#     coordinated omission), alternated, 2 rounds of DURATION s each; p99 of the pooled
#     samples. Target: durable p99 at most 2 ms above in-memory.
#  3. RQ on Redis (Debian's python3-rq, redis-server), the same trivial job (bench/
#     rq_durable.py: noop(i)) enqueued and completed. A private redis-server per case
#     on an ephemeral port in a temp dir, appendonly yes (AOF) with appendfsync
#     everysec (Redis' recommended setting: up to 1 s of acknowledged jobs can be lost
#     on a power cut) and, for the fsync-per-write comparison with coda's guarantee,
#     appendfsync always; RQ_WORKERS workers (one per CPU) of class SimpleWorker (runs
#     jobs in the worker process: RQ's fastest; the default Worker forks per job, shown
#     in a detail line) already listening; jobs enqueued with Queue.enqueue_many in
#     pipelined batches of 1000 while the workers run them; completed = the queue's
#     finished registry holds them all. Unpinned, as 1a. Ratio: coda 1a / RQ.
#
# Everything listens on 127.0.0.1 on ephemeral ports; the EXIT trap stops every process it
# started (TERM, then KILL after 5 s) and removes the temp dir (databases, AOF files).
#
# Usage: bench/durable.sh   (or `make bench-durable`)
# Env:   N            durable tasks per library-path run (default 200000)
#        ROUNDS       library-path runs per store (default 3)
#        DURATION     seconds per HTTP and latency run (default 10)
#        RATE         requests/s of the latency runs (default 2000)
#        CONNECTIONS  wrk connections of the HTTP path (default 64)
#        RQ_N         RQ jobs with appendfsync everysec (default 20000)
#        RQ_ALWAYS_N  RQ jobs with appendfsync always (default 5000; RQ is slow there)
#        RQ_FORK_N    RQ jobs with the default forking Worker (default 1000; 0 skips)
#        RQ_WORKERS   RQ worker processes (default: the number of CPUs)
#        BUILD        build directory (default build)
#        PYTHON       the Python with Debian's rq (default /usr/bin/python3)
#        PARTS        which cases to run (default "lib http latency rq": 1a, 1b, 2, 3)
#        RAW          if set, a directory that receives every raw output and log
# Needs: wrk, curl, taskset, redis-server, python3-rq (scripts/deps bench). Without rq or
# redis-server the RQ rows say NOT RUN and do not fail the run.
# Exit status: 0 when every run completed cleanly (whether or not targets are met), 1
# when a program failed, a client saw errors or tasks did not all run.
set -euo pipefail

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
N=${N:-200000}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
RATE=${RATE:-2000}
CONNECTIONS=${CONNECTIONS:-64}
RQ_N=${RQ_N:-20000}
RQ_ALWAYS_N=${RQ_ALWAYS_N:-5000}
RQ_FORK_N=${RQ_FORK_N:-1000}
RQ_WORKERS=${RQ_WORKERS:-$(nproc)}
PYTHON=${PYTHON:-/usr/bin/python3}
PARTS=${PARTS:-lib http latency rq}
WARMUP=2
TARGET=50000   # durable tasks/s
P99_MAX=2000   # us the durable p99 may exceed the in-memory one
SERVER_CPU=1
CLIENT_CPU=0
OTHER_MAX=20   # % of a core used outside the measured processes that makes a run disturbed
TRIES=3        # runs per case at most while they are disturbed

die() { echo "bench/durable.sh: $*" >&2; exit 1; }
posint() { [[ ${!1} =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer"; }
for v in N ROUNDS DURATION RATE CONNECTIONS RQ_N RQ_ALWAYS_N RQ_WORKERS; do posint "$v"; done
[[ $RQ_FORK_N =~ ^[0-9]+$ ]] || die "RQ_FORK_N must be a number"
for p in $PARTS; do
  case $p in lib | http | latency | rq) ;; *) die "PARTS: unknown part '$p'" ;; esac
done
part() { [[ " $PARTS " == *" $1 "* ]]; }

scripts/deps bench
for tool in wrk curl taskset python3; do
  command -v "$tool" >/dev/null || die "$tool not found (scripts/deps bench installs it)"
done
[ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs (servers on CPU $SERVER_CPU, clients on CPU $CLIENT_CPU)"

bench_bin=$BUILD/bench/durable_bench
latency=$BUILD/bench/latency
if [ ! -x "$bench_bin" ] || [ ! -x "$latency" ]; then
  [ -f "$BUILD/CMakeCache.txt" ] ||
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$BUILD" -j"$(nproc)" --target durable_bench latency
fi
for bin in "$bench_bin" "$latency"; do [ -x "$bin" ] || die "$bin was not built"; done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/coda-bench-durable.XXXXXX")
servers=()    # pids of running servers and workers, for the EXIT trap
failed=0
busy_runs=()  # runs during which something besides the measured processes used the CPU
disturbed_lib="" disturbed_lat=""  # " (disturbed)" when a run of that case stayed disturbed
problems=()   # errors worth a line under the table
# shellcheck source=bench/lib.sh disable=SC1091 # run from the repository root
. bench/lib.sh

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

problem() {
  failed=1
  problems+=("$*")
  echo "!! $*" >&2
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {print b - a}'; }
result() { awk -v k="$2" '$1 == "RESULT" && $2 == k {print $3}' "$1"; }

# CPU ticks of a process, its live children and the children it has reaped (RQ's default
# worker forks a child per job and reaps it).
tree_ticks() {
  local pid total=0 fields
  for pid in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
    fields=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
    # After the command name: utime, stime, cutime, cstime are fields 12-15 (stat(5) 14-17).
    total=$((total + $(echo "$fields" | awk '{print $12 + $13 + $14 + $15}')))
  done
  echo "$total"
}

# Ticks the CPUs spent idle while a process waited for the disk (fsync). lib.sh's
# machine_ticks counts them as busy; here they are the store's wait, not a disturbance.
iowait_ticks() { awk '$1 == "cpu" {print $6}' /proc/stat; }
# Ticks spent in softirqs: mostly the loopback TCP traffic between client and server.
# Part of `other` (the kernel charges them to whichever process they interrupt, or to
# none), shown apart so that a high `other` can be told from another process's load.
softirq_ticks() { awk '$1 == "cpu" {print $8}' /proc/stat; }

# Disturbance accounting. meter_start PID...: remembers the CPU time of the live processes
# PID..., of the script's reaped children (the foreground clients) and of the machine.
# meter_stop sets run_cpu (the PIDs), run_client (the reaped children), run_other
# (everything else but iowait: other processes, and kernel work for the measured ones such
# as softirqs and the file system's journal), run_softirq, run_iowait and run_steal, in %
# of one core over the wall time between the two.
meter_start() {
  meter_pids=("$@")
  meter_proc0=0
  local p
  for p in "${meter_pids[@]}"; do meter_proc0=$((meter_proc0 + $(tree_ticks "$p"))); done
  children_ticks >"$tmp/ticks"
  meter_client0=$(<"$tmp/ticks")
  meter_machine0=$(machine_ticks)
  meter_iowait0=$(iowait_ticks)
  meter_softirq0=$(softirq_ticks)
  meter_steal0=$(steal_ticks)
  meter_t0=$(now)
}
meter_stop() {
  local p proc1=0 client1 machine1 iowait softirq secs
  for p in "${meter_pids[@]}"; do proc1=$((proc1 + $(tree_ticks "$p"))); done
  children_ticks >"$tmp/ticks"
  client1=$(<"$tmp/ticks")
  machine1=$(machine_ticks)
  iowait=$(($(iowait_ticks) - meter_iowait0))
  softirq=$(($(softirq_ticks) - meter_softirq0))
  secs=$(elapsed "$meter_t0" "$(now)")
  run_cpu=$(percent $((proc1 - meter_proc0)) "$secs")
  run_client=$(percent $((client1 - meter_client0)) "$secs")
  run_other=$(percent $((machine1 - meter_machine0 - iowait - (proc1 - meter_proc0) -
    (client1 - meter_client0))) "$secs")
  run_iowait=$(percent "$iowait" "$secs")
  run_softirq=$(percent "$softirq" "$secs")
  run_steal=$(percent $(($(steal_ticks) - meter_steal0)) "$secs")
}

# stats FILE: median, min and max of the numbers in FILE, as "median min max".
stats() {
  sort -n "$1" | awk '{v[NR] = $1} END {
    if (!NR) {print "0 0 0"; exit}
    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.0f %.0f %.0f\n", m, v[1], v[NR]}'
}

# ---- 1a. library path ---------------------------------------------------------------------

# verify_db DIR: every task in DIR/tasks.db succeeded (the app has stopped, so every
# outcome is written); prints "rows succeeded" or a problem.
verify_db() {
  python3 - "$1/tasks.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
states = dict(db.execute("SELECT state, count(*) FROM coda_tasks GROUP BY state"))
print(sum(states.values()), states.get(2, 0))
PY
}

# stats_line JSON: the counters of a durable_bench run (coda_stats_json) in one line.
stats_line() {
  python3 - "$1" <<'PY' 2>/dev/null || echo "no stats"
import json, sys
s = json.loads(sys.argv[1])
t, d = s["tasks"]["thread"], s["durable"]
print("%d group commits; THREAD tasks succeeded %d, failed %d, dropped %d; store errors %d"
      % (d["batches"], t["succeeded"], t["failed"], t["dropped"], d["errors"]))
PY
}

# enqueue_run STORE ROUND: one durable_bench enqueue run with the sqlite or memory store
# (again, up to TRIES runs, while disturbed); appends the rates of the least disturbed run
# to $tmp/STORE-*.txt.
enqueue_run() {
  local store=$1 round=$2 out try uri dir extra rows ok best=-1
  for ((try = 1; try <= TRIES; try++)); do
    dir=$tmp/db-$store-$round-$try
    out=$tmp/enqueue-$store-$round-$try.txt
    mkdir -p "$dir"
    uri=memory
    [ "$store" = memory ] || uri=sqlite:$dir/tasks.db
    meter_start
    if ! "$bench_bin" enqueue --store "$uri" --n "$N" >"$out" 2>"$out.log"; then
      meter_stop
      problem "durable_bench enqueue --store $uri failed: $(grep -v WARNING "$out.log" |
        tail -n 5)"
      return
    fi
    meter_stop
    extra=""
    if [ "$store" = sqlite ]; then
      read -r rows ok < <(verify_db "$dir")
      extra="; database $(du -sh "$dir" | cut -f1), $ok of $rows tasks succeeded"
      ((rows == N + 1 && ok == rows)) ||
        problem "sqlite #$round: the database holds $rows tasks, $ok succeeded (want $((N + 1)))"
    fi
    rm -rf "$dir"
    echo "  $(grep -m1 ' tasks, ' "$out" | sed "s|sqlite:$dir/tasks.db|sqlite|")$extra" >&2
    echo "    $(stats_line "$(sed -n 's/^stats //p' "$out")");" \
      "$(grep -c WARNING "$out.log") warnings; CPU: bench ${run_client}%," \
      "other ${run_other}% (of which softirq ${run_softirq}%, steal" \
      "${run_steal}%); iowait ${run_iowait}%" >&2
    if ((best < 0 || run_other < best)); then
      best=$run_other
      cp "$out" "$tmp/enqueue-$store-$round.txt"
    fi
    ((run_other > OTHER_MAX)) || break
  done
  if ((best > OTHER_MAX)); then
    busy_runs+=("enqueue $store #$round (${best}% of a core)")
    disturbed_lib=" (disturbed)"
  fi
  out=$tmp/enqueue-$store-$round.txt
  result "$out" accepted_per_s >>"$tmp/$store-accepted.txt"
  result "$out" completed_per_s >>"$tmp/$store-completed.txt"
  result "$out" cpu_us_per_task >>"$tmp/$store-cpu.txt"
  result "$out" recorded_s >>"$tmp/$store-recorded.txt"
}

# ---- 1b and 2. servers ----------------------------------------------------------------------

# start_bench NAME STORE [THREADS]: durable_bench serve with the sqlite (fresh file) or
# memory store. With THREADS (event loops), unpinned; without, one loop pinned to
# SERVER_CPU. Sets pid_NAME, port_NAME and wide_NAME (1 when unpinned).
start_bench() {
  local name=$1 uri=memory port pin=(taskset -c "$SERVER_CPU") threads=1 wide=0
  if [ "$2" = sqlite ]; then
    mkdir -p "$tmp/db-$name"
    uri=sqlite:$tmp/db-$name/tasks.db
  fi
  if [ $# -ge 3 ]; then
    pin=() threads=$3 wide=1
  fi
  port=$(free_port)
  "${pin[@]}" "$bench_bin" serve --listen "127.0.0.1:$port" --store "$uri" \
    --threads "$threads" >"$tmp/$name.log" 2>&1 &
  servers+=($!)
  declare -g "pid_$name=$!" "port_$name=$port" "wide_$name=$wide" "sent_${name}_durable=0" \
    "sent_${name}_memory=0"
  check_server "$name" "$!" "$port" '{"status":"ok"}'
}

# ran NAME KIND: tasks of KIND (durable|memory) server NAME has run, from GET /count.
ran() {
  curl -s --noproxy '*' --max-time 5 "http://127.0.0.1:$(get "port_$1")/count" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2" 2>/dev/null ||
    echo "?"
}

wrk_requests() { awk '/requests in/ {print $1; exit}' "$1" 2>/dev/null || true; }

# http_run NAME ROUTE: wrk against GET /ROUTE of server NAME (again, up to TRIES runs, while
# disturbed, keeping the least disturbed run); sets acc_NAME_ROUTE (2xx/s), done_NAME_ROUTE
# (tasks completed/s), p99_NAME_ROUTE and cpu_NAME_ROUTE.
http_run() {
  local name=$1 route=$2 key=$1_$2 out=$tmp/wrk-$1-$2.txt try pid port url n t0 t1 want i
  local have errors acc rate p99 best=-1 args=(-t1 -c"$CONNECTIONS" --timeout 5s)
  local pin=(taskset -c "$CLIENT_CPU")
  pid=$(get "pid_$name") port=$(get "port_$name")
  if [ "$(get "wide_$name")" = 1 ]; then
    pin=() args=(-t2 -c"$CONNECTIONS" --timeout 5s)
  fi
  url=http://127.0.0.1:$port/$route
  for ((try = 1; try <= TRIES; try++)); do
    timeout $((WARMUP + 30)) "${pin[@]}" wrk "${args[@]}" -d"${WARMUP}s" \
      "$url" >"$out.warm" 2>&1 || true
    n=$(wrk_requests "$out.warm")
    declare -g "sent_$key=$(($(get "sent_$key") + ${n:-0}))"
    meter_start "$pid"
    t0=$(now)
    timeout $((DURATION + 30)) "${pin[@]}" wrk "${args[@]}" -d"${DURATION}s" \
      --latency "$url" >"$out.$try" 2>&1 || true
    meter_stop
    n=$(wrk_requests "$out.$try")
    declare -g "sent_$key=$(($(get "sent_$key") + ${n:-0}))"
    # Every task of every response so far has to run; the measured ones are the last.
    want=$(get "sent_$key") t1=""
    for ((i = 0; i < 3000; i++)); do
      have=$(ran "$name" "$route")
      if [[ $have =~ ^[0-9]+$ ]] && ((have >= want)); then t1=$(now); break; fi
      sleep 0.01
    done
    acc=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$out.$try")
    rate=0
    if [ -n "$t1" ] && [ -n "$n" ]; then
      rate=$(awk -v n="$n" -v s="$(elapsed "$t0" "$t1")" 'BEGIN {printf "%.0f", n / s}')
    else
      problem "$name /$route: $have of $want tasks ran within 30 s of the run's end"
    fi
    echo "  $name /$route: ${acc:-?} responses/s, tasks completed $rate/s; CPU: server" \
      "${run_cpu}%, wrk ${run_client}%, other ${run_other}% (of which softirq" \
      "${run_softirq}%, steal ${run_steal}%); iowait ${run_iowait}%" >&2
    if ((best < 0 || run_other < best)); then
      best=$run_other
      cp "$out.$try" "$out"
      declare -g "acc_$key=$acc" "done_$key=$rate" "cpu_$key=$run_cpu"
    fi
    ((run_other > OTHER_MAX)) || break
    grep -qE 'Socket errors|Non-2xx' "$out.$try" && break
  done
  if ((best > OTHER_MAX)); then
    busy_runs+=("$name /$route (${best}% of a core)")
    declare -g "disturbed_$key= (disturbed)"
  fi
  p99=$(awk 'function ms(v) {
               if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0
               if (v ~ /m$/) return v * 60000; if (v ~ /s$/) return v * 1000
               return v + 0 }
             $1 == "99%" {printf "%.2fms", ms($2)}' "$out")
  declare -g "p99_$key=${p99:--}"
  errors=$(cat "$out".[0-9] | grep -E 'Socket errors|Non-2xx' || true)
  kill -0 "$pid" 2>/dev/null || errors+=$'\n'"server exited during the run (see its log below)"
  [ -n "$(get "acc_$key")" ] || errors+=$'\n'"no Requests/sec in wrk's output"
  if [ -n "$errors" ]; then
    declare -g "err_$key=!"
    problem "$name /$route: ${errors#$'\n'}"
    sed 's/^/!!   | /' "$out" >&2
    tail -n 20 "$tmp/$name.log" | sed 's/^/!!   | /' >&2
  fi
}

# latency_run ROUTE ROUND: GET /ROUTE at RATE on the `lat` server (again, up to TRIES runs,
# while disturbed); leaves the latencies of the least disturbed run in
# $tmp/samples-ROUTE-ROUND.txt.
latency_run() {
  local route=$1 round=$2 out=$tmp/latency-$1-$2.txt try best=-1
  for ((try = 1; try <= TRIES; try++)); do
    meter_start "$(get pid_lat)"
    taskset -c "$CLIENT_CPU" "$latency" --port "$(get port_lat)" --path "/$route" \
      --rate "$RATE" --seconds "$DURATION" --warmup 1 \
      --samples "$tmp/try-$route-$round.txt" >"$out.$try" 2>&1 ||
      problem "latency client, /$route: errors: $(grep -v RESULT "$out.$try" | tail -n 3)"
    meter_stop
    echo "  latency /$route #$round: p99 $(result "$out.$try" p99_us) us; CPU: server" \
      "${run_cpu}%, client ${run_client}%, other ${run_other}% (of which softirq" \
      "${run_softirq}%, steal ${run_steal}%); iowait ${run_iowait}%" >&2
    if ((best < 0 || run_other < best)); then
      best=$run_other
      cp "$out.$try" "$out"
      mv "$tmp/try-$route-$round.txt" "$tmp/samples-$route-$round.txt"
      declare -g "cpu_lat_$route=$run_cpu"
    fi
    ((run_other > OTHER_MAX)) || break
  done
  if ((best > OTHER_MAX)); then
    busy_runs+=("latency /$route #$round (${best}% of a core)")
    disturbed_lat=" (disturbed)"
  fi
  grep -v '^RESULT' "$out" | sed "s/^/    /" >&2
}

# pooled ROUTE: p50, p99, p99.9 and max (us) over every round's samples of ROUTE; sets
# p50_ROUTE, p99_ROUTE, p999_ROUTE, max_ROUTE and n_ROUTE.
pooled() {
  local route=$1 s
  s=$(cat "$tmp"/samples-"$route"-*.txt | sort -n | awk '{v[NR] = $1}
    function at(p,  i) {i = int(p / 100 * NR) + 1; if (i > NR) i = NR; return v[i]}
    END {if (NR) print at(50), at(99), at(99.9), v[NR], NR; else print "0 0 0 0 0"}')
  read -r "p50_$route" "p99_$route" "p999_$route" "max_$route" "n_$route" <<<"$s"
}

# ---- 3. RQ ------------------------------------------------------------------------------------

# rq_run NAME FSYNC WORKER_CLASS JOBS: a private redis-server (AOF, appendfsync FSYNC),
# RQ_WORKERS workers of WORKER_CLASS, bench/rq_durable.py enqueuing JOBS; sets
# rqacc_NAME and rqdone_NAME (jobs/s), or skip_NAME.
rq_run() {
  local name=$1 fsync=$2 class=$3 jobs=$4 dir=$tmp/redis-$1 port rpid i wpids=() out
  out=$tmp/rq-$name.txt
  port=$(free_port)
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --appendonly yes \
    --appendfsync "$fsync" --save '' --daemonize no --logfile "$tmp/redis-$name.log" &
  rpid=$!
  servers+=("$rpid")
  for ((i = 0; i < 100; i++)); do
    [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && break
    kill -0 "$rpid" 2>/dev/null || break
    sleep 0.05
  done
  if [ "$(redis-cli -p "$port" ping 2>/dev/null)" != PONG ]; then
    problem "redis-server ($name) did not start: $(tail -n 3 "$tmp/redis-$name.log")"
    stop_server "$rpid" || true
    return
  fi
  for ((i = 1; i <= RQ_WORKERS; i++)); do
    "$PYTHON" -m rq.cli worker -w "$class" --path bench --url "redis://127.0.0.1:$port" \
      -q --disable-job-desc-logging bench >"$tmp/rq-$name-worker$i.log" 2>&1 &
    servers+=($!)
    wpids+=($!)
  done
  # Start-up (Python imports) is not measured: the workers have registered first.
  for ((i = 0; i < 300; i++)); do
    (($(redis-cli -p "$port" scard rq:workers:bench 2>/dev/null || echo 0) >= RQ_WORKERS)) &&
      break
    sleep 0.05
  done
  meter_start "$rpid" "${wpids[@]}"
  "$PYTHON" bench/rq_durable.py --port "$port" --n "$jobs" --workers "$RQ_WORKERS" \
    >"$out" 2>&1 || problem "rq ($name): $(grep -v '^RESULT' "$out" | tail -n 3)"
  meter_stop
  for i in "${wpids[@]}"; do
    stop_server "$i" || problem "an RQ worker ($name) exited with status $?"
  done
  echo "  $(grep '^rq:' "$out" || echo "rq ($name): no result");" \
    "aof $(du -sh "$dir" | cut -f1); CPU: redis + workers ${run_cpu}%," \
    "enqueuer ${run_client}%, other ${run_other}% (of which softirq ${run_softirq}%, steal" \
    "${run_steal}%); iowait ${run_iowait}%" >&2
  if ((run_other > OTHER_MAX)); then
    busy_runs+=("rq $name (${run_other}% of a core)")
    declare -g "disturbed_rq_$name= (disturbed)"
  fi
  stop_server "$rpid" || problem "redis-server ($name) exited with status $?"
  declare -g "rqacc_$name=$(result "$out" accepted_per_s)" \
    "rqdone_$name=$(result "$out" completed_per_s)"
}

# ---- run --------------------------------------------------------------------------------------

echo "coda durable tasks: $(nproc) CPUs; library path N=$N x $ROUNDS rounds per store;" \
  "HTTP wrk -t1 -c$CONNECTIONS ${DURATION}s (server on CPU $SERVER_CPU, client on CPU" \
  "$CLIENT_CPU); latency $RATE req/s, 2 x ${DURATION}s per route"
echo "sqlite $("$PYTHON" -c 'import sqlite3; print(sqlite3.sqlite_version)' 2>/dev/null ||
  echo '?') (system library), database in $tmp ($(df -T "$tmp" | awk 'NR == 2 {print $2}'))"

if part lib; then
  # 1a. The library path, stores alternated.
  echo "running the library path ..." >&2
  for ((round = 1; round <= ROUNDS; round++)); do
    enqueue_run sqlite "$round"
    enqueue_run memory "$round"
  done
  read -r lib_acc lib_acc_min lib_acc_max < <(stats "$tmp/sqlite-accepted.txt")
  read -r lib_done lib_done_min lib_done_max < <(stats "$tmp/sqlite-completed.txt")
  read -r mem_acc mem_acc_min mem_acc_max < <(stats "$tmp/memory-accepted.txt")
  read -r mem_done mem_done_min mem_done_max < <(stats "$tmp/memory-completed.txt")
  median() { sort -n "$1" | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
  lib_cpu=$(median "$tmp/sqlite-cpu.txt") mem_cpu=$(median "$tmp/memory-cpu.txt")
  lib_rec=$(median "$tmp/sqlite-recorded.txt") mem_rec=$(median "$tmp/memory-recorded.txt")
fi

if part http; then
  # 1b. The HTTP path.
  echo "running the HTTP path ..." >&2
  start_bench sq sqlite
  start_bench mem memory
  http_run sq memory
  http_run sq durable
  http_run mem durable
  stop_server "$(get pid_sq)" || problem "durable_bench (sqlite) exited with status $?"
  stop_server "$(get pid_mem)" || problem "durable_bench (memory) exited with status $?"
  # The whole machine: two loops, unpinned, wrk -t2 sharing the two CPUs.
  start_bench wide sqlite 2
  http_run wide memory
  http_run wide durable
  stop_server "$(get pid_wide)" || problem "durable_bench (2 loops) exited with status $?"
  grep -vE '^INFO' "$tmp/sq.log" "$tmp/mem.log" "$tmp/wide.log" >&2 || true
fi

if part latency; then
  # 2. Latency, alternated so that a drift of the machine's load hits both routes.
  echo "running latency ..." >&2
  start_bench lat sqlite
  for round in 1 2; do
    latency_run memory "$round"
    latency_run durable "$round"
  done
  pooled memory
  pooled durable
  # Every 2xx of /durable (in every try) must have had its task run.
  lat_sent=$(cat "$tmp"/latency-durable-*.txt.[0-9] |
    awk '{for (i = 2; i <= NF; i++) if ($i ~ /^2xx,?$/) n += $(i - 1)} END {print n + 0}')
  for ((i = 0; i < 100; i++)); do
    lat_ran_durable=$(ran lat durable)
    [[ $lat_ran_durable =~ ^[0-9]+$ ]] && ((lat_ran_durable >= lat_sent)) && break
    sleep 0.1
  done
  if ! [[ $lat_ran_durable =~ ^[0-9]+$ ]] || ((lat_ran_durable < lat_sent)); then
    problem "latency server: $lat_ran_durable durable tasks ran for $lat_sent 2xx responses"
  fi
  lat_ran_durable="$lat_ran_durable for $lat_sent responses"
  stop_server "$(get pid_lat)" || problem "durable_bench (latency) exited with status $?"
  grep -vE '^INFO' "$tmp/lat.log" >&2 || true
fi

# 3. RQ.
skip_rq=""
if ! part rq; then
  skip_rq="not in PARTS"
elif ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  skip_rq="redis-server or redis-cli missing (apt-get install redis-server)"
elif ! "$PYTHON" -c 'import rq' 2>/dev/null; then
  skip_rq="$PYTHON cannot import rq (apt-get install python3-rq)"
fi
if [ -z "$skip_rq" ]; then
  rq_version="RQ $("$PYTHON" -c 'import rq; print(rq.__version__)') on Redis"
  rq_version+=" $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')"
  echo "running RQ ($rq_version) ..." >&2
  rq_run everysec everysec rq.worker.SimpleWorker "$RQ_N"
  rq_run always always rq.worker.SimpleWorker "$RQ_ALWAYS_N"
  ((RQ_FORK_N == 0)) || rq_run fork everysec rq.worker.Worker "$RQ_FORK_N"
fi

# ---- the table --------------------------------------------------------------------------------

# verdict EXPR [NOTE]: MET when the awk expression is true, then NOTE (" (disturbed)").
verdict() { { awk "BEGIN {exit !($1)}" && echo -n MET || echo -n "NOT MET"; } && echo "${2:-}"; }
row() { printf '%-49s %10s %14s %9s %11s  %s\n' "$@"; }
range() { echo "($2-$3)"; }

echo
row "benchmark" "coda" "against" "ratio" "target" "result"
num() { local v; v=$(get "$1"); echo "${v:-0}"; }
lib_acc=$(num lib_acc) lib_done=$(num lib_done) # 0 when not run, for the RQ ratios
if part lib; then
  row "1a. library, sqlite: accepted tasks/s" "$lib_acc" "memory $mem_acc" \
    "$(ratio "$lib_acc" "$mem_acc")" ">= $TARGET" \
    "$(verdict "$lib_acc >= $TARGET" "$disturbed_lib")"
  row "1a. library, sqlite: completed tasks/s" "$lib_done" "memory $mem_done" \
    "$(ratio "$lib_done" "$mem_done")" ">= $TARGET" \
    "$(verdict "$lib_done >= $TARGET" "$disturbed_lib")"
fi
if part http; then
  a=$(num acc_sq_durable) b=$(num acc_sq_memory)
  row "1b. HTTP /durable, sqlite, 1 core: accepted/s" "$a${err_sq_durable:-}" \
    "/memory $b${err_sq_memory:-}" "$(ratio "$a" "$b")" ">= $TARGET" \
    "$(verdict "$a >= $TARGET" "${disturbed_sq_durable:-}")"
  a=$(num done_sq_durable) b=$(num done_sq_memory)
  row "1b. HTTP /durable, sqlite, 1 core: completed/s" "$a" "/memory $b" "$(ratio "$a" "$b")" \
    ">= $TARGET" "$(verdict "$a >= $TARGET" "${disturbed_sq_durable:-}")"
  a=$(num acc_wide_durable) b=$(num acc_wide_memory)
  row "1c. HTTP /durable, sqlite, 2 cores: accepted/s" "$a${err_wide_durable:-}" \
    "/memory $b${err_wide_memory:-}" "$(ratio "$a" "$b")" ">= $TARGET" \
    "$(verdict "$a >= $TARGET" "${disturbed_wide_durable:-}")"
  a=$(num done_wide_durable) b=$(num done_wide_memory)
  row "1c. HTTP /durable, sqlite, 2 cores: completed/s" "$a" "/memory $b" "$(ratio "$a" "$b")" \
    ">= $TARGET" "$(verdict "$a >= $TARGET" "${disturbed_wide_durable:-}")"
fi
if part latency; then
  a=$(num p99_durable) b=$(num p99_memory)
  row "2. p99 @ $RATE/s: /durable vs /memory" "$a us" "$b us" \
    "$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%+.0f us", a - b}')" "<= +$P99_MAX us" \
    "$(verdict "$a > 0 && $b > 0 && $a - $b <= $P99_MAX" "$disturbed_lat")"
fi
if [ -z "$skip_rq" ]; then
  for c in everysec always; do
    row "3. vs RQ (AOF $c): completed jobs/s" "$lib_done" "$(get "rqdone_$c")" \
      "$(ratio "$lib_done" "$(get "rqdone_$c")")" "-" "(reported)$(get "disturbed_rq_$c")"
    row "3. vs RQ (AOF $c): accepted jobs/s" "$lib_acc" "$(get "rqacc_$c")" \
      "$(ratio "$lib_acc" "$(get "rqacc_$c")")" "-" "(reported)$(get "disturbed_rq_$c")"
  done
elif part rq; then
  row "3. vs RQ" "$lib_done" "not run" "-" "-" "NOT RUN: $skip_rq"
fi

echo
part lib && echo "  1a detail: median of $ROUNDS runs of N=$N (range): sqlite accepted $lib_acc" \
  "$(range "$lib_acc" "$lib_acc_min" "$lib_acc_max")/s, completed $lib_done" \
  "$(range "$lib_done" "$lib_done_min" "$lib_done_max")/s, ${lib_cpu} us CPU per task," \
  "outcomes written ${lib_rec} s after the first enqueue; memory store accepted $mem_acc" \
  "$(range "$mem_acc" "$mem_acc_min" "$mem_acc_max")/s, completed $mem_done" \
  "$(range "$mem_done" "$mem_done_min" "$mem_done_max")/s, ${mem_cpu} us CPU per task," \
  "outcomes written after ${mem_rec} s"
part http && printf '  1b/1c detail (responses/s, tasks completed/s, wrk p99, server CPU %%):\n'
part http && for key in sq_durable sq_memory mem_durable wide_durable wide_memory; do
  case $key in
    sq_durable) label="1 core, sqlite store, /durable" ;;
    sq_memory) label="1 core, sqlite store, /memory" ;;
    mem_durable) label="1 core, memory store, /durable" ;;
    wide_durable) label="2 cores, sqlite store, /durable" ;;
    wide_memory) label="2 cores, sqlite store, /memory" ;;
  esac
  printf '    %-36s %8s %8s %9s %5s%%\n' "$label" "$(get "acc_$key")" "$(get "done_$key")" \
    "$(get "p99_$key")" "$(get "cpu_$key")"
done
part latency && echo "  2 detail: $(get n_memory)/$(get n_durable) samples pooled; p50 /memory $(get p50_memory) us," \
  "/durable $(get p50_durable) us; p99.9 $(get p999_memory) / $(get p999_durable) us; max $(get max_memory) /" \
  "$(get max_durable) us; server CPU ${cpu_lat_memory:-?}% / ${cpu_lat_durable:-?}%;" \
  "durable tasks run: $lat_ran_durable"
if [ -z "$skip_rq" ]; then
  part http && echo "  3 detail: coda over HTTP (1b, one server core) completed" \
    "$(num done_sq_durable)/s: $(ratio "$(num done_sq_durable)" "$(get rqdone_everysec)") RQ" \
    "everysec, $(ratio "$(num done_sq_durable)" "$(get rqdone_always)") RQ always"
  echo "  3 detail: $rq_version; $RQ_WORKERS SimpleWorkers (no fork per job), enqueue_many" \
    "in pipelined batches of 1000 while they run: everysec $RQ_N jobs, always" \
    "$RQ_ALWAYS_N jobs; accepted $(get rqacc_everysec)/s, $(get rqacc_always)/s"
  if ((RQ_FORK_N > 0)); then
    echo "    RQ's default Worker (a fork per job), everysec, $RQ_FORK_N jobs: completed" \
      "$(get rqdone_fork)/s (coda $(ratio "$lib_done" "$(get rqdone_fork)"))"
  fi
fi
if ((${#busy_runs[@]})); then
  echo "warning: other processes used the CPU during $(printf '%s, ' "${busy_runs[@]}" |
    sed 's/, $//') even after $TRIES tries; those numbers are unreliable"
fi
for p in "${problems[@]}"; do echo "!! $p"; done
exit $failed
