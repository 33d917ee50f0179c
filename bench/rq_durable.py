"""The RQ side of bench/durable.sh: N no-op jobs enqueued and completed through RQ.

    rq_durable.py --port P [--n 20000] [--workers 2] [--batch 1000]

Its workers (`rq worker -w rq.worker.SimpleWorker --path bench --url ...`, started by
durable.sh before this runs, one per CPU) import `noop` from this module. The script
waits until WORKERS workers listen on the queue, then enqueues N jobs `noop(i)` with
Queue.enqueue_many in pipelined batches of BATCH (one round trip per batch: RQ's fastest
way in), while the workers already run them, and polls the queue's FinishedJobRegistry
every 10 ms until it holds N jobs. Times from the first enqueue:
  accepted   the last batch was acknowledged by Redis;
  completed  N jobs are in the finished registry.
Ends with "RESULT name value" lines. Exit status 1 when a job failed or not all ran
within 300 s.
"""
import argparse
import sys
import time


def noop(i):
    """The job: nothing, as coda's counting task does next to nothing."""
    return None


def main():
    from redis import Redis
    from rq import Queue, Worker
    from rq.registry import FailedJobRegistry, FinishedJobRegistry

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--queue", default="bench")
    o = ap.parse_args()

    redis = Redis(host="127.0.0.1", port=o.port)
    q = Queue(o.queue, connection=redis)
    finished = FinishedJobRegistry(queue=q)
    failed = FailedJobRegistry(queue=q)
    deadline = time.monotonic() + 30
    while Worker.count(queue=q) < o.workers:
        if time.monotonic() > deadline:
            print(f"rq_durable: only {Worker.count(queue=q)} of {o.workers} workers "
                  "registered within 30 s", file=sys.stderr)
            return 1
        time.sleep(0.05)
    base = finished.count

    t0 = time.monotonic()
    for start in range(0, o.n, o.batch):
        jobs = [Queue.prepare_data("rq_durable.noop", args=(i,))
                for i in range(start, min(o.n, start + o.batch))]
        with redis.pipeline() as pipe:
            q.enqueue_many(jobs, pipeline=pipe)
            pipe.execute()
    accepted = time.monotonic()

    done = 0
    while time.monotonic() - t0 < 300:
        done = finished.count - base
        if done >= o.n or failed.count:
            break
        time.sleep(0.01)
    completed = time.monotonic()
    ta, tc = accepted - t0, completed - t0
    print(f"rq: {o.n} jobs, {o.workers} workers, batches of {o.batch}: accepted in "
          f"{ta:.3f} s ({o.n / ta:.0f}/s), completed in {tc:.3f} s ({done / tc:.0f}/s); "
          f"{failed.count} failed")
    print(f"RESULT n {o.n}\nRESULT accepted_per_s {o.n / ta:.0f}")
    print(f"RESULT completed_per_s {done / tc:.0f}\nRESULT failed {failed.count}")
    if done < o.n or failed.count:
        print(f"rq_durable: {done} of {o.n} jobs finished, {failed.count} failed",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
