#!/usr/bin/env bash
# coda's durable tasks on the Redis store side by side with the Redis task queues users run
# today (BullMQ, Sidekiq, Celery, RQ: ../shared/peers/redis), in one run on one private
# redis-server, and the ratios. Targets (issue 11): coda >= 2x BullMQ on enqueue and on
# processing, processing scales from one worker process to two, the durable HTTP route on
# Redis keeps >= 0.75x the same route with an in-memory task (and on SQLite), its p99 at a
# moderate rate at most 2 ms above.
#
# The redis-server: an ephemeral port on 127.0.0.1, a temp dir, `--save ''` and, as the
# peers' run.sh with APPENDFSYNC set, `--appendonly yes --appendfsync $APPENDFSYNC`
# (default always: an fsync per write; APPENDFSYNC=none runs it without persistence,
# run.sh's own default). FLUSHALL before every case.
#
# What runs (bench/redis_bench.c; the workload and the counting are the peers': N no-op
# tasks with one string argument "j<i>" that count themselves, ../shared/peers/redis/tally.py):
#  1. enqueue/s  one producer, coda_app_enqueue() then coda_app_store_sync() per task: each
#                add waits until Redis acknowledged it (the peers' `await queue.add()`).
#     bulk/s     the same with one coda_app_store_sync() per 1,000 coda_app_enqueue()s: the
#                store thread writes the 1,000 in one commit (one script call). coda has no
#                app-level list add; this is its natural batch API.
#     The tasks go to queue "bench", which the enqueuing process does not serve.
#  2. process/s  worker processes (`redis_bench worker`: coda_app_listen(app, NULL), one
#                event loop, the no-op task on the THREAD executor, queue "bench") started
#                once the N tasks are queued; N / (last done - first started), with 1 worker
#                process and with 2 (the N tasks queued again by bulk adds before the 2).
#                Duplicates and missing tasks counted as the peers count them; a missing task
#                fails the run.
#  3. HTTP       bench/durable_bench serve (one event loop, pinned to CPU 1, wrk -t1
#                -cCONNECTIONS pinned to CPU 0): GET /durable (202 once the task is in the
#                store) against GET /memory (the same task in memory), on the Redis store
#                and on SQLite (as bench/durable.sh 1b); every /durable 2xx must have run.
#  4. latency    GET /durable vs GET /memory on the Redis store at RATE req/s (bench/latency,
#                no coordinated omission), alternated, 2 rounds of DURATION s; pooled p99.
#  5. peers      each peer's own driver from ../shared/peers/redis (as its run.sh runs them,
#                REDIS_URL pointing at this run's redis-server, FLUSHALL before each); when
#                one lacks its packages, its run.sh is called once, with N=100, to install
#                them. Or
#                PEERS_FROM=FILE takes the table a separate run.sh printed.
#
# Usage: bench/redis.sh   (or `make bench-redis`)
# Env:   N=20000  ROUNDS=3 (of 1-2 and 5, alternated; medians)  APPENDFSYNC=always
#        DURATION=10  RATE=2000  CONNECTIONS=64
#        PEERS="bullmq sidekiq celery rq" (PEERS= runs none)  PEERS_FROM=FILE
#        PEERS_DIR=../shared/peers/redis  PEER_TIMEOUT=600  WORKER_EXEC=thread|loop
#        PARTS="enqueue process http latency peers"  BUILD=build  RAW=DIR (keeps the logs)
# Exit status 1 when a program failed, a task went missing, a client saw errors.
set -euo pipefail

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
N=${N:-20000}
APPENDFSYNC=${APPENDFSYNC:-always}
DURATION=${DURATION:-10}
RATE=${RATE:-2000}
CONNECTIONS=${CONNECTIONS:-64}
PEERS=${PEERS-bullmq sidekiq celery rq}
PEERS_FROM=${PEERS_FROM:-}
PEERS_DIR=${PEERS_DIR:-$(cd .. && pwd)/shared/peers/redis}
PEER_TIMEOUT=${PEER_TIMEOUT:-600}
WORKER_EXEC=${WORKER_EXEC:-thread}
PARTS=${PARTS:-enqueue process http latency peers}
ROUNDS=${ROUNDS:-3}
WARMUP=2
SERVER_CPU=1
CLIENT_CPU=0
PY=/usr/bin/python3

die() { echo "bench/redis.sh: $*" >&2; exit 1; }
part() { [[ " $PARTS " == *" $1 "* ]]; }
for v in N DURATION RATE CONNECTIONS ROUNDS; do [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v: a positive integer"; done

for tool in redis-server redis-cli redis-benchmark wrk curl taskset python3; do
  command -v "$tool" >/dev/null || die "$tool not found (scripts/deps bench installs it)"
done
bench_bin=$BUILD/bench/redis_bench durable_bin=$BUILD/bench/durable_bench latency=$BUILD/bench/latency
if [ ! -x "$bench_bin" ] || [ ! -x "$durable_bin" ] || [ ! -x "$latency" ]; then
  [ -f "$BUILD/CMakeCache.txt" ] || cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$BUILD" -j"$(nproc)" --target redis_bench durable_bench latency
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/coda-bench-redis.XXXXXX")
servers=() # pids the EXIT trap stops
problems=()
failed=0
# shellcheck source=bench/lib.sh disable=SC1091 # run from the repository root
. bench/lib.sh

redis_pid='' port=''
# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
  local pid
  for pid in "${servers[@]}"; do stop_server "$pid" || true; done
  if [[ -n $redis_pid ]]; then
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  if [ -n "${RAW:-}" ]; then
    mkdir -p "$RAW"
    cp "$tmp"/*.txt "$tmp"/*.log "$RAW"/ 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

problem() { failed=1; problems+=("$*"); echo "!! $*" >&2; }
result() { awk -v k="$2" '$1 == "RESULT" && $2 == k {print $3}' "$1"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", b - a}'; }
flush() { redis-cli -p "$port" flushall >/dev/null; }

# Phase metering: redis-server CPU and the whole machine's busy time (lib.sh).
phase_start() { ph_redis0=$(cpu_ticks "$redis_pid"); ph_machine0=$(machine_ticks); ph_t0=$(now); }
# phase_stop TASKS: sets ph_secs, ph_redis (% of a core), ph_redis_us (redis CPU us per
# task), ph_machine (% of one core the machine was busy: 200 = both cores).
phase_stop() {
  local hz redis machine
  hz=$(getconf CLK_TCK)
  redis=$(($(cpu_ticks "$redis_pid") - ph_redis0)) machine=$(($(machine_ticks) - ph_machine0))
  ph_secs=$(elapsed "$ph_t0" "$(now)")
  ph_redis=$(percent "$redis" "$ph_secs") ph_machine=$(percent "$machine" "$ph_secs")
  ph_redis_us=$(awk -v t="$redis" -v hz="$hz" -v n="$1" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
}

# ---- the redis-server -----------------------------------------------------------------------

echo "== $(date -u +%FT%TZ), uptime before:$(uptime | sed 's/.*load/ load/')" >&2
load_before=$(uptime | sed 's/.*load average: //')
port=$(free_port)
persistence=(--appendonly no) persistence_label=none
if [[ $APPENDFSYNC != none ]]; then
  persistence=(--appendonly yes --appendfsync "$APPENDFSYNC") persistence_label="AOF, appendfsync $APPENDFSYNC"
fi
mkdir -p "$tmp/redis"
redis-server --port "$port" --bind 127.0.0.1 --dir "$tmp/redis" --save '' "${persistence[@]}" \
  --logfile "$tmp/redis.log" &
redis_pid=$!
for _ in {1..50}; do [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]] && break; sleep 0.1; done
[[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]] || die "redis-server did not start: $(tail -n 3 "$tmp/redis.log")"
store=redis://127.0.0.1:$port/0
tally_at=127.0.0.1:$port
redis_version=$(redis-server --version | sed 's/.* v=\([^ ]*\).*/\1/')
echo "redis-server $redis_version on :$port, persistence: $persistence_label; N=$N; $(nproc) CPUs" >&2

# keep VAR VALUE: VALUE is this round's VAR; after the rounds VAR becomes the median of
# them and VAR_all lists them (medians()).
keep() { echo "$2" >>"$tmp/v-$1"; declare -g "$1=$2"; }
medians() {
  local f var
  for f in "$tmp"/v-*; do
    [ -e "$f" ] || continue
    var=${f##*/v-}
    declare -g "$var=$(grep -E '^[0-9.]+$' "$f" | sort -n |
      awk '{v[NR] = $1} END {if (!NR) exit
        m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf(m == int(m) ? "%d\n" : "%.1f\n", m)}')"
    declare -g "${var}_all=$(paste -sd/ "$f")"
  done
}

# ---- 1. enqueue -----------------------------------------------------------------------------

# enqueue_run NAME BATCH: N adds with a sync every BATCH; sets NAME (tasks/s), NAME_p50/p99
# (us per sync) and the phase figures NAME_redis_us, NAME_machine.
enqueue_run() {
  local name=$1 batch=$2 out=$tmp/enqueue-$1.txt
  redis-cli -p "$port" config resetstat >/dev/null
  phase_start
  "$bench_bin" enqueue --store "$store" --n "$N" --batch "$batch" >"$out" 2>&1 ||
    problem "enqueue ($name): $(tail -n 3 "$out")"
  phase_stop "$N"
  keep "$name" "$(result "$out" per_s)"
  keep "${name}_p50" "$(result "$out" p50_us)"
  keep "${name}_p99" "$(result "$out" p99_us)"
  keep "${name}_redis_us" "$ph_redis_us"
  keep "${name}_redis" "$ph_redis"
  keep "${name}_machine" "$ph_machine"
  keep "${name}_script_us" "$(script_us)"
  echo "  $(grep '^coda enqueue' "$out" || echo "$name: no result"); redis-server ${ph_redis}% of a" \
    "core, ${ph_redis_us} us CPU per task; machine busy ${ph_machine}% (of 200)" >&2
}

# script_us: Redis's own time per script call since the last CONFIG RESETSTAT (INFO
# commandstats, EVALSHA and EVAL together), in us.
script_us() {
  redis-cli -p "$port" info commandstats | tr -d '\r' | awk -F'[=,]' \
    '/^cmdstat_(evalsha|eval):/ {calls += $2; usec += $4} END {if (calls) printf "%.1f", usec / calls}'
}

# round_trip: bare round trips per second of one client that waits for each reply (PING,
# redis-benchmark -c 1): what any "one add at a time" producer pays per add on top of the
# add's own time in Redis. Sets rt_per_s, the median over rounds.
round_trip() {
  keep rt_per_s "$(redis-benchmark -p "$port" -c 1 -n 20000 -q -t ping 2>/dev/null | tr '\r' '\n' |
    awk '/^PING_MBULK:/ {printf "%.0f", $2}')"
}

# ---- 2. process -----------------------------------------------------------------------------

# process_run K: K worker processes run the N queued tasks; sets proc_K, dups_K, missing_K.
process_run() {
  local k=$1 out=$tmp/process-$1.txt i wpids=()
  phase_start
  for ((i = 1; i <= k; i++)); do
    "$bench_bin" worker --store "$store" --tally "$tally_at" --exec "$WORKER_EXEC" \
      >"$tmp/worker-$k-$i.log" 2>&1 &
    servers+=($!) wpids+=($!)
  done
  "$bench_bin" tally --tally "$tally_at" --n "$N" wait >"$out" 2>&1 || problem "tally wait ($k): $(tail -n 2 "$out")"
  phase_stop "$N"
  for i in "${wpids[@]}"; do stop_server "$i" || problem "a worker ($k) exited with status $?: $(tail -n 3 "$tmp"/worker-"$k"-*.log)"; done
  "$bench_bin" tally --tally "$tally_at" --n "$N" verify >>"$out" 2>&1 || problem "process ($k workers): $(tail -n 2 "$out")"
  keep "proc_$k" "$(result "$out" per_s)"
  local d m
  d=$(result "$out" dups) m=$(result "$out" missing)
  dups_sum[k]=$((${dups_sum[k]:-0} + ${d:-0}))
  missing_sum[k]=$((${missing_sum[k]:-0} + ${m:-$N}))
  keep "proc_${k}_machine" "$ph_machine"
  # The phase includes worker start-up and the 0.5 s settle.
  keep "proc_${k}_redis_us" "$ph_redis_us"
  echo "  $(grep '^coda process' "$out" || echo "process ($k): no result"); redis-server" \
    "${ph_redis_us} us CPU per task; machine busy ${ph_machine}% over the phase (${ph_secs} s incl." \
    "start-up and settle)" >&2
}

dups_sum=() missing_sum=()
coda_round() {
  part enqueue || part process || return 0
  echo "round $1: coda enqueue (N=$N) ..." >&2
  flush
  enqueue_run bulk 1000
  flush
  enqueue_run enq 1
  round_trip
  if part process; then
    echo "round $1: coda workers ..." >&2
    process_run 1
    flush
    "$bench_bin" enqueue --store "$store" --n "$N" --batch 1000 >"$tmp/requeue.txt" 2>&1 ||
      problem "re-queue for 2 workers: $(tail -n 3 "$tmp/requeue.txt")"
    process_run 2
  fi
}

# ---- 3. HTTP --------------------------------------------------------------------------------

# start_serve NAME STORE: durable_bench serve on CPU 1; sets pid_NAME, port_NAME.
start_serve() {
  local name=$1 p
  p=$(free_port)
  taskset -c "$SERVER_CPU" "$durable_bin" serve --listen "127.0.0.1:$p" --store "$2" --threads 1 \
    >"$tmp/$name.log" 2>&1 &
  servers+=($!)
  declare -g "pid_$name=$!" "port_$name=$p"
  check_server "$name" "$!" "$p" '{"status":"ok"}'
}

ran() { curl -s --noproxy '*' "http://127.0.0.1:$(get "port_$1")/count" | sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p"; }
wrk_count() { awk '/requests in/ {print $1}' "$1"; }

# http_run NAME ROUTE: warm-up, then DURATION s of wrk; sets rps_NAME_ROUTE, p99_NAME_ROUTE.
http_run() {
  local name=$1 route=$2 out=$tmp/wrk-$1-$2.txt before sent i got p
  p=$(get "port_$name")
  before=$(ran "$name" "$route")
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "http://127.0.0.1:$p/$route" >"$out.warm" 2>&1
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$p/$route" >"$out" 2>&1
  sent=$(($(wrk_count "$out.warm") + $(wrk_count "$out")))
  for ((i = 0; i < 200; i++)); do
    got=$(($(ran "$name" "$route") - before))
    ((got >= sent)) && break
    sleep 0.05
  done
  ((got >= sent)) || problem "$name /$route: $got tasks ran for $sent responses"
  if grep -qE 'Socket errors|Non-2xx' "$out" "$out.warm"; then
    problem "$name /$route: $(grep -hE 'Socket errors|Non-2xx' "$out" "$out.warm" | head -n 2)"
  fi
  declare -g "rps_${name}_$route=$(awk '/^Requests\/sec/ {printf "%.0f", $2}' "$out")" \
    "p99_${name}_$route=$(awk '$1 == "99%" {print $2}' "$out")"
  echo "  $name /$route: $(get "rps_${name}_$route") responses/s, wrk p99 $(get "p99_${name}_$route");" \
    "tasks run $got for $sent responses" >&2
}

if part http; then
  echo "running HTTP (durable_bench serve on CPU $SERVER_CPU, wrk -t1 -c$CONNECTIONS on CPU $CLIENT_CPU, ${DURATION}s) ..." >&2
  flush
  start_serve redis "$store"
  phase_start
  http_run redis memory
  http_run redis durable
  phase_stop 1
  http_redis_pct=$ph_redis
  stop_server "$(get pid_redis)" || problem "durable_bench (redis) exited with status $?"
  flush
  start_serve sqlite "sqlite:$tmp/bench.db"
  http_run sqlite memory
  http_run sqlite durable
  stop_server "$(get pid_sqlite)" || problem "durable_bench (sqlite) exited with status $?"
fi

# ---- 4. latency -----------------------------------------------------------------------------

if part latency; then
  echo "running latency ($RATE req/s, 2 x ${DURATION}s per route) ..." >&2
  flush
  start_serve lat "$store"
  for round in 1 2; do
    for route in memory durable; do
      taskset -c "$CLIENT_CPU" "$latency" --port "$(get port_lat)" --path "/$route" --rate "$RATE" \
        --seconds "$DURATION" --warmup 1 --samples "$tmp/samples-$route-$round.txt" \
        >"$tmp/latency-$route-$round.txt" 2>&1 || problem "latency /$route: $(grep -v RESULT "$tmp/latency-$route-$round.txt" | tail -n 2)"
      echo "  /$route #$round: p99 $(result "$tmp/latency-$route-$round.txt" p99_us) us" >&2
    done
  done
  for route in memory durable; do
    read -r "lat50_$route" "lat99_$route" < <(cat "$tmp"/samples-"$route"-*.txt | sort -n |
      awk '{v[NR] = $1} function at(p, i) {i = int(p / 100 * NR) + 1; return v[i > NR ? NR : i]}
           END {print at(50), at(99)}')
  done
  stop_server "$(get pid_lat)" || problem "durable_bench (latency) exited with status $?"
fi

# ---- 5. the peers ---------------------------------------------------------------------------

peer_rows=()
# Where BullMQ's node_modules are: beside their run.sh, or its cache folder when that one
# is read-only (as their run.sh chooses).
find_node_dir() {
  node_dir=$PEERS_DIR/node
  [[ -f $node_dir/node_modules/bullmq/package.json ]] || node_dir=${XDG_CACHE_HOME:-$HOME/.cache}/coda-peers-node
}
peers_install() {
  find_node_dir
  local missing=() p
  for p in $PEERS; do
    case $p in
      bullmq) [[ -f $node_dir/node_modules/bullmq/package.json ]] || missing+=(bullmq) ;;
      sidekiq) dpkg -s ruby-sidekiq >/dev/null 2>&1 || missing+=(sidekiq) ;;
      celery*) dpkg -s python3-celery python3-redis >/dev/null 2>&1 || missing+=("$p") ;;
      rq*) dpkg -s python3-rq python3-redis >/dev/null 2>&1 || missing+=("$p") ;;
    esac
  done
  if ((${#missing[@]})); then
    # Their run.sh installs what its peers need (apt, npm ci); N=100 keeps its own run short.
    echo "installing what ${missing[*]} need (their run.sh, N=100) ..." >&2
    env -u APPENDFSYNC N=100 RQ_N=100 "$PEERS_DIR/run.sh" "${missing[@]}" >"$tmp/peers-install.log" 2>&1 ||
      echo "  (their run.sh exited with status $?; each peer is tried below)" >&2
    find_node_dir # their run.sh may have installed beside itself
  fi
}

# peers_round R: each peer once; its row goes to $tmp/rows-PEER (one line per round).
peers_round() {
  local p n cmd row peer_pid
  for p in $PEERS; do
    case $p in
      bullmq) n=$N cmd=(env -C "$node_dir" node bullmq_bench.js) ;;
      sidekiq) n=$N cmd=(/usr/bin/ruby sidekiq_bench.rb) ;;
      celery) n=$N cmd=(env CELERY_POOL=prefork "$PY" celery_bench.py) ;;
      celery-threads) n=$N cmd=(env CELERY_POOL=threads "$PY" celery_bench.py) ;;
      rq) n=$((N / 10 > 100 ? N / 10 : 100)) cmd=(env RQ_WORKER=simple "$PY" rq_bench.py) ;;
      rq-fork) n=$((N / 40 > 100 ? N / 40 : 100)) cmd=(env RQ_WORKER=fork "$PY" rq_bench.py) ;;
      *) problem "unknown peer $p"; continue ;;
    esac
    flush
    echo "round $1: $p (N=$n) ..." >&2
    phase_start
    # timeout(1) leads a process group of driver and workers: stopped as a whole after.
    (cd "$PEERS_DIR" && REDIS_URL=$store N=$n exec timeout "$PEER_TIMEOUT" "${cmd[@]}") \
      >"$tmp/peer-$p.log" 2>&1 </dev/null &
    peer_pid=$!
    wait "$peer_pid" || true
    phase_stop "$n"
    kill -TERM -- "-$peer_pid" 2>/dev/null || true # workers a failed driver left behind
    row=$(grep -m1 $'^RESULT\t' "$tmp/peer-$p.log" | cut -f2- || true)
    if [[ -z $row ]]; then
      problem "$p failed (round $1): $(tail -n 5 "$tmp/peer-$p.log")"
      continue
    fi
    [[ $(cut -f7 <<<"$row") =~ ^(0|-)$ ]] || problem "$p: tasks missing (round $1)"
    echo "$row" >>"$tmp/rows-$p"
    keep "peer_redis_us_${p//-/_}" "$ph_redis_us"
    keep "peer_machine_${p//-/_}" "$ph_machine"
    echo "  $p: $(cut -f3-6 <<<"$row" | tr '\t' ' ') (enqueue bulk process dups); redis-server" \
      "${ph_redis_us} us CPU per job over the whole peer run (${ph_secs} s)" >&2
  done
}

# peer_medians: one row per peer, the median of each rate over the rounds, dups and missing
# summed.
peer_medians() {
  local p f col
  for p in $PEERS; do
    f=$tmp/rows-$p
    [ -s "$f" ] || continue
    for col in 3 4 5; do
      cut -f"$col" "$f" | grep -E '^[0-9.]+$' | sort -n >"$f.$col" || true
    done
    peer_rows+=("$(awk -F'\t' -v r="$(wc -l <"$f")" '
      function med(file,  v, n, x) {n = 0; while ((getline x < file) > 0) v[++n] = x
        close(file); if (!n) return "-"; return sprintf("%.0f", n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2)}
      {d += $6; m += $7; peer = $1; n = $2; notes = $8}
      END {printf "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s", peer, n, med(FILENAME ".3"), med(FILENAME ".4"),
             med(FILENAME ".5"), d, m, notes (r > 1 ? "; median of " r " rounds" : "")}' "$f")")
    declare -g "peer_all_${p//-/_}=$(cut -f3-5 "$f" | tr '\t' ' ' | paste -sd/)"
  done
}

if part peers && [[ -n $PEERS_FROM ]]; then
  # run.sh's table: peer N enqueue/s bulk/s process/s dups notes...
  while read -r p n e b pr d rest; do
    [[ " bullmq sidekiq celery celery-threads rq rq-fork " == *" $p "* ]] || continue
    peer_rows+=("$(printf '%s\t%s\t%s\t%s\t%s\t%s\t-\t%s (from %s)' "$p" "$n" "$e" "$b" "$pr" "$d" "$rest" "$PEERS_FROM")")
  done <"$PEERS_FROM"
elif part peers && [[ -n $PEERS ]]; then
  peers_install
fi
run_peers() { part peers && [[ -z $PEERS_FROM && -n $PEERS ]]; }
for ((round = 1; round <= ROUNDS; round++)); do
  coda_round "$round"
  ! run_peers || peers_round "$round"
done
medians
! run_peers || peer_medians

# ---- the tables -----------------------------------------------------------------------------

load_after=$(uptime | sed 's/.*load average: //')
echo "== uptime after:$(uptime | sed 's/.*load/ load/')" >&2
bull_enq='' bull_proc='' bull_bulk=''
for row in "${peer_rows[@]}"; do
  IFS=$'\t' read -r p _ e b pr _ <<<"$row"
  [[ $p == bullmq ]] && bull_enq=$e bull_bulk=$b bull_proc=$pr
done
# verdict EXPR: MET / NOT MET (awk expression)
verdict() { awk "BEGIN {exit !($1)}" && echo MET || echo "NOT MET"; }
or0() { local v; v=$(get "$1"); echo "${v:-0}"; }

echo
echo "redis-server $redis_version on :$port, persistence: $persistence_label; $(nproc) CPUs;" \
  "load average before $load_before, after $load_after (shared machine: figures provisional)"
line() { printf '%-22s %6s %10s %10s %10s %5s  %s\n' "$@"; }
line peer N enqueue/s bulk/s process/s dups notes
rounds_note=""
((ROUNDS == 1)) || rounds_note="; median of $ROUNDS rounds"
part enqueue && line "coda (1 worker)" "$N" "${enq:--}" "${bulk:--}" "${proc_1:--}" "${dups_sum[1]:--}" \
  "coda redis store, 1 worker process, 1 loop, $WORKER_EXEC executor; missing ${missing_sum[1]:--}$rounds_note"
part process && line "coda (2 workers)" "$N" "-" "-" "${proc_2:--}" "${dups_sum[2]:--}" \
  "2 worker processes; missing ${missing_sum[2]:--}$rounds_note"
for row in "${peer_rows[@]}"; do
  IFS=$'\t' read -r p n e b pr d _ notes <<<"$row"
  line "$p" "$n" "$e" "$b" "$pr" "$d" "$notes"
done
echo "enqueue/s: one producer, each add acknowledged before the next; bulk/s: batches of 1,000;" \
  "process/s: first task started to last task done"

echo
row() { printf '%-46s %12s %14s %8s %10s  %s\n' "$@"; }
row "target" "coda" "against" "ratio" "target" "result"
if [[ -n $bull_enq ]]; then
  part enqueue && row "enqueue/s vs BullMQ" "$(or0 enq)" "$bull_enq" "$(ratio "$(or0 enq)" "$bull_enq")" ">= 2x" \
    "$(verdict "$(or0 enq) >= 2 * $bull_enq")"
  # One add at a time cannot beat one bare round trip plus the add's own time in Redis.
  part enqueue && [[ -n ${rt_per_s:-} && -n ${enq_script_us:-} ]] &&
    row "  ceiling here: 1 / (round trip + add script)" \
      "$(awk -v rt="$rt_per_s" -v sc="$enq_script_us" 'BEGIN {printf "%.0f", 1e6 / (1e6 / rt + sc)}')" \
      "$((2 * bull_enq))" "-" "(2x BullMQ)" \
      "$(verdict "1e6 / (1e6 / $rt_per_s + $enq_script_us) >= 2 * $bull_enq" | sed 's/^MET/reachable/; s/^NOT MET/above the ceiling/')"
  part enqueue && row "bulk/s vs BullMQ (reported)" "$(or0 bulk)" "$bull_bulk" "$(ratio "$(or0 bulk)" "$bull_bulk")" "-" "-"
  part process && row "process/s (2 workers) vs BullMQ" "$(or0 proc_2)" "$bull_proc" \
    "$(ratio "$(or0 proc_2)" "$bull_proc")" ">= 2x" "$(verdict "$(or0 proc_2) >= 2 * $bull_proc")"
  part process && row "process/s (1 worker) vs BullMQ (1 process)" "$(or0 proc_1)" "$bull_proc" \
    "$(ratio "$(or0 proc_1)" "$bull_proc")" "-" "-"
fi
part process && row "process/s: 2 workers vs 1" "$(or0 proc_2)" "$(or0 proc_1)" \
  "$(ratio "$(or0 proc_2)" "$(or0 proc_1)")" "> 1x" "$(verdict "$(or0 proc_2) > $(or0 proc_1)")"
if part http; then
  row "HTTP redis: /durable vs /memory resp/s" "$(or0 rps_redis_durable)" "$(or0 rps_redis_memory)" \
    "$(ratio "$(or0 rps_redis_durable)" "$(or0 rps_redis_memory)")" ">= 0.75x" \
    "$(verdict "$(or0 rps_redis_durable) >= 0.75 * $(or0 rps_redis_memory)")"
  row "HTTP sqlite: /durable vs /memory resp/s" "$(or0 rps_sqlite_durable)" "$(or0 rps_sqlite_memory)" \
    "$(ratio "$(or0 rps_sqlite_durable)" "$(or0 rps_sqlite_memory)")" ">= 0.75x" \
    "$(verdict "$(or0 rps_sqlite_durable) >= 0.75 * $(or0 rps_sqlite_memory)")"
fi
if part latency; then
  row "p99 @ $RATE/s redis: /durable vs /memory" "$(or0 lat99_durable) us" "$(or0 lat99_memory) us" \
    "$(awk -v a="$(or0 lat99_durable)" -v b="$(or0 lat99_memory)" 'BEGIN {printf "%+.0f us", a - b}')" \
    "<= +2000 us" "$(verdict "$(or0 lat99_durable) - $(or0 lat99_memory) <= 2000")"
fi

echo
((ROUNDS == 1)) || echo "  every round (coda enqueue / bulk / process 1 / process 2):" \
  "${enq_all:-} / ${bulk_all:-} / ${proc_1_all:-} / ${proc_2_all:-}"
for p in $PEERS; do
  [[ -z $(get "peer_all_${p//-/_}") ]] || ((ROUNDS == 1)) ||
    echo "  every round ($p enqueue bulk process): $(get "peer_all_${p//-/_}")"
done
part enqueue && echo "  enqueue detail: one at a time, add+sync p50 ${enq_p50:-?} us, p99 ${enq_p99:-?} us," \
  "redis-server ${enq_redis_us:-?} us CPU per task (${enq_redis:-?}% of a core), the add script" \
  "${enq_script_us:-?} us in Redis per call, a bare round trip (PING, one client)" \
  "$(awk -v r="${rt_per_s:-0}" 'BEGIN {if (r) printf "%.1f us = %d/s", 1e6 / r, r; else print "?"}');" \
  "bulk: per 1,000 p50 ${bulk_p50:-?} us, redis-server ${bulk_redis_us:-?} us CPU per task" \
  "(${bulk_redis:-?}% of a core)"
part process && echo "  process detail: redis-server CPU per task over each phase (start-up and" \
  "0.5 s settle included): 1 worker ${proc_1_redis_us:-?} us, 2 workers ${proc_2_redis_us:-?} us;" \
  "machine busy ${proc_1_machine:-?}% / ${proc_2_machine:-?}% of 200"
part http && echo "  HTTP detail: wrk p99 redis /memory ${p99_redis_memory:-?}, /durable ${p99_redis_durable:-?};" \
  "sqlite /memory ${p99_sqlite_memory:-?}, /durable ${p99_sqlite_durable:-?}; redis-server" \
  "${http_redis_pct:-?}% of a core over the two redis runs"
part latency && echo "  latency detail: p50 /memory ${lat50_memory:-?} us, /durable ${lat50_durable:-?} us"
part process && echo "  coda: redis-server CPU per task summed over bulk + enqueue + process (1 worker)," \
  "as the peers' runs below: $(awk -v a="${bulk_redis_us:-0}" -v b="${enq_redis_us:-0}" \
    -v c="${proc_1_redis_us:-0}" 'BEGIN {printf "%.1f", a + b + c}') us"
for p in $PEERS; do
  [[ -n $(get "peer_redis_us_${p//-/_}") ]] && echo "  $p: redis-server $(get "peer_redis_us_${p//-/_}") us CPU per job" \
    "over its whole run (bulk + enqueue + process), machine busy $(get "peer_machine_${p//-/_}")% of 200"
done
for p in "${problems[@]}"; do echo "!! $p"; done
exit $failed
