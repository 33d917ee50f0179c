"""FastAPI side of bench/tasks.sh: the same routes as coda-demo's /plain and /trivial.

GET /trivial answers {"status":"queued"} and adds one background task that counts itself,
as coda-demo does with its THREAD task. The task is a plain `def`, so Starlette runs it
in its thread pool after the response is sent: FastAPI's equivalent of coda's thread
executor. GET /stats reports how many tasks ran, so the benchmark can check that every
answered request's task ran.

Run (one worker, as bench/tasks.sh does):
    /usr/bin/python3 -m uvicorn fastapi_trivial:app --app-dir bench \
        --host 127.0.0.1 --port PORT --workers 1 --log-level warning --no-access-log
"""

import threading

from fastapi import BackgroundTasks, FastAPI

app = FastAPI()

_lock = threading.Lock()
_runs = 0


def trivial_task() -> None:
    global _runs
    with _lock:  # tasks run on Starlette's thread pool
        _runs += 1


@app.get("/plain")
async def plain():
    return {"status": "ok"}


@app.get("/trivial")
async def trivial(background_tasks: BackgroundTasks):
    background_tasks.add_task(trivial_task)
    return {"status": "queued"}


@app.get("/stats")
async def stats():
    with _lock:
        return {"runs": _runs}
