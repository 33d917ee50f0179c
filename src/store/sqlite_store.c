/*
 * sqlite_store.c - the embedded default store: one SQLite file in WAL mode,
 * synchronous=FULL, so a commit returns only after its WAL frames are
 * fsync'd. The engine groups many writes into one batch (one transaction,
 * one fsync).
 *
 * Owner: the engine's store thread uses `db` for everything but get();
 * get() (any thread) uses `rdb`, a second connection, under `read_mu`. WAL
 * lets it read while the store thread writes. A third connection, `cdb`,
 * belongs to the checkpointer thread (see checkpointer()).
 *
 * One process per file: an exclusive flock on PATH-lock is taken at open
 * and held until close. That is what lets recover() release every claim at
 * start-up: whoever held them is dead. So this store never waits for a
 * lease to expire; leases are kept for the record and for stores shared by
 * several processes.
 *
 * Schema version in PRAGMA user_version; migrate() brings an older file up
 * to date inside one transaction, and refuses a newer one.
 *
 * Version 2 of the store interface (fencing): each row keeps the token of
 * its claim (`token`) and its queue; finish and progress_leased change a
 * row only with its current token while it is claimed (owned=1), and what
 * they did not change is kept for refused(). renew() is called by the
 * engine's heartbeat thread: it writes on a connection of its own, `hdb`,
 * under `renew_mu`, so it never shares the store thread's connection.
 */
#include "store/store.h"

#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#define SCHEMA_VERSION 5
#define QUEUE_CACHE 16 /* queues a batch sums totals for (more: written at once) */
/* How long a write waits for a lock another program holds before the batch
 * fails (and its responses become 503): a client is waiting meanwhile. */
#define BUSY_TIMEOUT_MS 1000

enum {
  ST_INSERT,
  ST_CLAIM,
  ST_FINISH,
  ST_PROGRESS,
  ST_RESERVE,
  ST_NEXT_DUE,
  ST_BEGIN,
  ST_COMMIT,
  ST_ROLLBACK,
  ST_PAGES,
  ST_PURGE,
  ST_CLAIM_QUEUE,
  ST_NEXT_DUE_QUEUE,
  ST_PROGRESS_LEASED,
  ST_EXPIRE,
  ST_PAUSE,
  ST_PAUSED,
  ST_QUEUE_KNOWN,
  ST_FINISH_READ,
  ST_QUEUE_TOTALS,
  ST_RETRY,
  ST_CANCEL,
  ST_CANCEL_RUNNING,
  ST_REMOVE,
  ST_EXISTS,
  ST_RETRY_ALL,
  ST_REMOVE_ALL,
  ST_COUNT_
};

/* What claim and expire return, in this order (read_claimed()). */
#define CLAIMED_COLUMNS                                                                  \
  "id,name,key,args,attempts,max_attempts,created_at,run_at,progress,token,queue,trace"
#define NOT_PAUSED "queue NOT IN (SELECT name FROM coda_queues WHERE paused=1)"
/* Finished tasks (succeeded, dead, cancelled) as equalities, not IN: see schema_v5. */
#define DONE_STATES "(state=2 OR state=4 OR state=5)"
/* What get, list and find read (read_record()). */
#define RECORD_COLUMNS                                                                   \
  "id,name,key,state,attempts,max_attempts,created_at,run_at,started_at,finished_at,"    \
  "progress,error,result,queue,trace,request_id,origin,cancel_req,errors,args"
/* retry(): what becomes of a task run again now (?2: now). */
#define RETRY_SET                                                                        \
  "UPDATE coda_tasks SET state=0,run_at=?2,finished_at=0,cancel_req=0,max_attempts="     \
  "CASE WHEN attempts>=max_attempts THEN attempts+1 ELSE max_attempts END "
#define CLAIM_SET                                                                        \
  "UPDATE coda_tasks SET state=1,owned=1,lease_until=?1,attempts=attempts+1,"            \
  "token=token+1 WHERE id IN (SELECT id FROM coda_tasks WHERE owned=0 AND "              \
  "state IN (0,3) AND run_at<=?2 AND " NOT_PAUSED

static const char *const sql[ST_COUNT_] = {
    [ST_INSERT] =
        "INSERT INTO coda_tasks(id,name,key,args,state,attempts,max_attempts,"
        "created_at,run_at,owned,lease_until,token,queue,trace,request_id,origin) "
        "VALUES(?1,?2,?3,?4,?9,?5,?6,?7,?8,?9,?10,?9,?11,?12,?13,?14)",
    [ST_CLAIM] = CLAIM_SET " ORDER BY run_at LIMIT ?3) RETURNING " CLAIMED_COLUMNS,
    [ST_CLAIM_QUEUE] =
        CLAIM_SET " AND queue=?4 ORDER BY run_at LIMIT ?3) RETURNING " CLAIMED_COLUMNS,
    [ST_FINISH] = "UPDATE coda_tasks SET state=?2,attempts=?3,run_at=?4,started_at=?5,"
                  "finished_at=?6,progress=?7,error=?8,result=?9,owned=0,lease_until=0,"
                  "errors=coalesce(?11,errors) WHERE id=?1 AND token=?10 AND owned=1",
    [ST_PROGRESS] = "UPDATE coda_tasks SET progress=?2 WHERE id=?1",
    [ST_RESERVE] =
        "UPDATE coda_meta SET value=value+?1 WHERE name='next_id' RETURNING value",
    [ST_NEXT_DUE] = "SELECT min(run_at) FROM coda_tasks WHERE owned=0 AND state IN (0,3) "
                    "AND " NOT_PAUSED,
    [ST_NEXT_DUE_QUEUE] = "SELECT min(run_at) FROM coda_tasks WHERE owned=0 AND "
                          "state IN (0,3) AND queue=?1 AND " NOT_PAUSED,
    [ST_PROGRESS_LEASED] = "UPDATE coda_tasks SET progress=?2 WHERE id=?1 AND token=?3 "
                           "AND owned=1",
    [ST_EXPIRE] =
        "UPDATE coda_tasks SET token=token+1,lease_until=?1,state=1 WHERE id IN "
        "(SELECT id FROM coda_tasks WHERE owned=1 AND lease_until<?2 "
        "ORDER BY lease_until LIMIT ?3) RETURNING " CLAIMED_COLUMNS,
    [ST_PAUSED] = "SELECT name FROM coda_queues WHERE paused=1 ORDER BY name",
    [ST_PAUSE] = "INSERT INTO coda_queues(name,paused) VALUES(?1,?2) "
                 "ON CONFLICT(name) DO UPDATE SET paused=excluded.paused",
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_PAGES] = "PRAGMA page_count",
    [ST_PURGE] =
        "DELETE FROM coda_tasks WHERE id IN (SELECT id FROM coda_tasks "
        "WHERE " DONE_STATES " AND finished_at<?1 ORDER BY finished_at LIMIT ?2)",
    [ST_QUEUE_KNOWN] = "INSERT INTO coda_queues(name) VALUES(?1) ON CONFLICT DO NOTHING",
    [ST_FINISH_READ] = "SELECT cancel_req,errors,queue FROM coda_tasks WHERE id=?1 AND "
                       "token=?2 AND owned=1",
    [ST_QUEUE_TOTALS] = "INSERT INTO coda_queues(name,processed,failed) VALUES(?1,?2,?3) "
                        "ON CONFLICT(name) DO UPDATE SET processed=processed+excluded."
                        "processed,failed=failed+excluded.failed",
    [ST_RETRY] = RETRY_SET "WHERE id=?1 AND owned=0 AND (state IN (3,4,5) OR "
                           "(state=0 AND run_at>?2))",
    [ST_CANCEL] = "UPDATE coda_tasks SET state=5,finished_at=?2 WHERE id=?1 AND owned=0 "
                  "AND state IN (0,3)",
    [ST_CANCEL_RUNNING] = "UPDATE coda_tasks SET cancel_req=1 WHERE id=?1 AND state=1",
    [ST_REMOVE] = "DELETE FROM coda_tasks WHERE id=?1 AND state<>1",
    [ST_EXISTS] = "SELECT 1 FROM coda_tasks WHERE id=?1",
    /* The bulk forms, BULK_ROWS tasks after id ?4 per statement (bulk()). */
    [ST_RETRY_ALL] =
        RETRY_SET "WHERE id IN (SELECT id FROM coda_tasks WHERE id>?4 AND "
                  "state=?1 AND owned=0 AND state IN (3,4,5) AND "
                  "(?3 IS NULL OR queue=?3) ORDER BY id LIMIT ?5) RETURNING id",
    [ST_REMOVE_ALL] =
        "DELETE FROM coda_tasks WHERE id IN (SELECT id FROM coda_tasks WHERE "
        "id>?4 AND state=?1 AND state<>1 AND (?3 IS NULL OR queue=?3) "
        "ORDER BY id LIMIT ?5) RETURNING id",
};

/* Version 1. Tasks waiting for a claim are the only ones in the partial
 * index, so writing a claimed task and finishing it never touch it. */
static const char *const schema_v1 =
    "CREATE TABLE coda_tasks("
    " id INTEGER PRIMARY KEY,"
    " name TEXT NOT NULL,"
    " key TEXT,"
    " args BLOB,"
    " state INTEGER NOT NULL,"    /* coda_task_state */
    " attempts INTEGER NOT NULL," /* attempts started */
    " max_attempts INTEGER NOT NULL,"
    " created_at INTEGER NOT NULL," /* unix ms */
    " run_at INTEGER NOT NULL,"
    " started_at INTEGER NOT NULL DEFAULT 0,"
    " finished_at INTEGER NOT NULL DEFAULT 0,"
    " owned INTEGER NOT NULL DEFAULT 0," /* 1: claimed by the process holding the file */
    " lease_until INTEGER NOT NULL DEFAULT 0,"
    " progress REAL NOT NULL DEFAULT 0,"
    " error TEXT,"
    " result BLOB);"
    "CREATE INDEX coda_tasks_due ON coda_tasks(run_at) WHERE owned=0 AND state IN (0,3);"
    "CREATE TABLE coda_meta(name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
    "INSERT INTO coda_meta VALUES('next_id', 1);";

/* Version 2: finished tasks (succeeded, dead) by when they finished, for
 * the purge past CODA_OPT_TASK_RETAIN. */
static const char *const schema_v2 =
    "CREATE INDEX coda_tasks_done ON coda_tasks(finished_at) WHERE state IN (2,4);";

/* find() by name pages through one name's tasks by id. An index, not a
 * change of what the file holds: made where missing whatever the schema
 * version, and an older coda keeps it up to date without knowing it. */
static const char *const index_names =
    "CREATE INDEX IF NOT EXISTS coda_tasks_name ON coda_tasks(name, id);";
/* Version 3 (store interface version 2): the queue of each task, the token
 * of its claim, paused queues, and claimed tasks by the end of their lease
 * for expire(). The columns are added only where missing (migrate_v3()):
 * rows of an older file read as queue "default", token 0. */
static const char *const schema_v3 =
    "CREATE TABLE IF NOT EXISTS coda_queues(name TEXT PRIMARY KEY,"
    " paused INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS coda_tasks_queue_due ON coda_tasks(queue, run_at)"
    " WHERE owned=0 AND state IN (0,3);"
    "CREATE INDEX IF NOT EXISTS coda_tasks_leased ON coda_tasks(lease_until) WHERE "
    "owned=1;";

/* Version 4 (store interface version 3): the request that added a task,
 * a running task's cancel request, its failed attempts (JSON), each
 * queue's totals; cancelled tasks (5) are finished ones for the purge;
 * the tasks by queue and state (queue_stats() reads that index only). */
static const char *const schema_v4 =
    "DROP INDEX IF EXISTS coda_tasks_done;"
    "CREATE INDEX coda_tasks_done ON coda_tasks(finished_at) WHERE state IN (2,4,5);"
    "CREATE INDEX IF NOT EXISTS coda_tasks_queue_state ON coda_tasks(queue, state);";

/* Version 5: the same index of finished tasks, its predicate written as
 * equalities. SQLite evaluates a partial index's predicate at every write
 * of a row (old and new), and `state IN (2,4,5)` (three values or more)
 * built a temporary b-tree each time: 4 us more per task on the durable
 * path, every add and every finish. The purge's WHERE names the same term,
 * so it still uses the index. */
static const char *const schema_v5 =
    "DROP INDEX IF EXISTS coda_tasks_done;"
    "CREATE INDEX coda_tasks_done ON coda_tasks(finished_at) WHERE " DONE_STATES ";";

typedef struct sqlite_store {
  coda__store base;
  sqlite3 *db;
  sqlite3 *rdb;
  sqlite3_stmt *st[ST_COUNT_];
  sqlite3_stmt *get;
  sqlite3_stmt *list;
  sqlite3_stmt *find[16]; /* by which filters are set (find_shape), made on first use */
  int queue_column; /* find: 1 the table has a queue column, -1 not, 0 not known yet */
  uv_mutex_t read_mu;
  int lock_fd;
  long max_bytes; /* 0: no cap */
  long page_size;
  int full; /* at the cap when the batch began: new tasks refused */
  int lazy; /* this batch runs with synchronous=NORMAL */
  /* The checkpointer: its own thread and connection, so that copying the
   * WAL back into the file (and that fsync) never holds up a commit. */
  sqlite3 *cdb;
  uv_thread_t ckpt_thread;
  uv_mutex_t ckpt_mu; /* guards ckpt_stop; ckpt_cond wakes the thread */
  uv_cond_t ckpt_cond;
  int ckpt_stop;
  int ckpt_running;
  atomic_int wal_pages; /* frames in the WAL after the last commit */
  /* Version 2. Store thread: the queues served (NULL: all) and the
   * refusals of the open batch. */
  char **served;
  int nserved;
  coda__lease *refused;
  int nrefused, refused_cap;
  /* Per batch, not per task: each queue's processed and failed totals of
   * the batch's finishes, written at commit (dropped by a rollback, as the
   * finishes are); and the queues whose coda_queues row is known to exist
   * (forgotten at a rollback, which may have undone the insert). */
  struct queue_total {
    char name[128];
    long processed, failed;
  } totals[QUEUE_CACHE];
  int ntotals;
  char known[QUEUE_CACHE][128];
  int nknown, next_known;
  /* The heartbeat's connection and statement, under renew_mu. */
  sqlite3 *hdb;
  sqlite3_stmt *renew;
  uv_mutex_t renew_mu;
  /* Turns at the write lock (turn_mu, turn_cond): the store thread marks
   * its batches (writing) and starts none while a renewal waits, so a
   * store thread committing back to back cannot starve the heartbeat
   * (SQLite's busy handler polls with sleeps and lost every time: "renewing
   * 73 leases failed: database is locked", and leases not renewed expire). */
  uv_mutex_t turn_mu;
  uv_cond_t turn_cond;
  int writing, renew_waiting;
  /* Version 3: this process's node record (node_mu), and the queue
   * statistics' statements on rdb (read_mu). */
  uv_mutex_t node_mu;
  coda__node_table nodes;
  sqlite3_stmt *stats_queues, *stats_counts;
  char err[512];
} sqlite_store;

static const coda__store_methods sqlite_methods;

/* CODA_ETIMEDOUT when another program's lock outlasted the busy timeout
 * (trying again at once cannot help), CODA_ELIMIT when what was written
 * does not fit (the file's size limit or a full disk, a value too big),
 * CODA_ESTORE otherwise. */
static int fail(sqlite_store *s, sqlite3 *db, const char *what) {
  snprintf(s->err, sizeof s->err, "sqlite store: %s: %s", what, sqlite3_errmsg(db));
  int code = sqlite3_errcode(db) & 0xff;
  if (code == SQLITE_BUSY || code == SQLITE_LOCKED)
    return CODA_ETIMEDOUT;
  return code == SQLITE_FULL || code == SQLITE_TOOBIG ? CODA_ELIMIT : CODA_ESTORE;
}

static int step_done(sqlite_store *s, sqlite3_stmt *st, const char *what) {
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : fail(s, s->db, what);
}

#define CHECKPOINT_PAGES 1000 /* as SQLite's own autocheckpoint */
#define CHECKPOINT_EVERY_MS 200

static int on_wal_commit(void *arg, sqlite3 *db, const char *name, int pages) {
  (void)db, (void)name;
  atomic_store_explicit(&((sqlite_store *)arg)->wal_pages, pages, memory_order_relaxed);
  return SQLITE_OK;
}

static void checkpointer(void *arg) {
  sqlite_store *s = arg;
  uv_mutex_lock(&s->ckpt_mu);
  while (!s->ckpt_stop) {
    uv_cond_timedwait(&s->ckpt_cond, &s->ckpt_mu, CHECKPOINT_EVERY_MS * 1000000ull);
    if (s->ckpt_stop ||
        atomic_load_explicit(&s->wal_pages, memory_order_relaxed) < CHECKPOINT_PAGES)
      continue;
    uv_mutex_unlock(&s->ckpt_mu);
    /* PASSIVE: copies what it can without waiting for the writer. */
    if (sqlite3_wal_checkpoint_v2(s->cdb, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL) ==
        SQLITE_OK)
      atomic_store_explicit(&s->wal_pages, 0, memory_order_relaxed);
    uv_mutex_lock(&s->ckpt_mu);
  }
  uv_mutex_unlock(&s->ckpt_mu);
}

/* ---- opening ------------------------------------------------------------ */

/* mkdir -p of the directory part of path. */
static int make_parent_dirs(const char *path) {
  char dir[4096];
  size_t n = strlen(path);
  if (n >= sizeof dir)
    return -1;
  memcpy(dir, path, n + 1);
  char *slash = strrchr(dir, '/');
  if (!slash || slash == dir)
    return 0;
  *slash = '\0';
  for (char *p = dir + 1; *p; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
      return -1;
    *p = '/';
  }
  return mkdir(dir, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static int take_lock(sqlite_store *s, const char *path) {
  char lock[4200];
  snprintf(lock, sizeof lock, "%s-lock", path);
  s->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (s->lock_fd < 0) {
    snprintf(s->err, sizeof s->err, "sqlite store: cannot create %.300s: %s", lock,
             strerror(errno));
    return CODA_ESTORE;
  }
  if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    snprintf(
        s->err, sizeof s->err,
        "sqlite store: %.300s is in use by another process (or another app in this one)",
        path);
    return CODA_ESTORE;
  }
  return 0;
}

static int exec(sqlite_store *s, const char *text, const char *what) {
  return sqlite3_exec(s->db, text, NULL, NULL, NULL) == SQLITE_OK ? 0
                                                                  : fail(s, s->db, what);
}

static int user_version(sqlite_store *s, int *v) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
    return fail(s, s->db, "reading the schema version");
  int rc = sqlite3_step(st);
  *v = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  return rc == SQLITE_ROW ? 0 : fail(s, s->db, "reading the schema version");
}

/* Whether coda_tasks has this column (a file an older coda wrote may not). */
static int has_column(sqlite_store *s, const char *column, int *yes) {
  sqlite3_stmt *st;
  *yes = 0;
  if (sqlite3_prepare_v2(s->db,
                         "SELECT 1 FROM pragma_table_info('coda_tasks') WHERE name=?1",
                         -1, &st, NULL) != SQLITE_OK)
    return fail(s, s->db, "reading the schema");
  sqlite3_bind_text(st, 1, column, -1, SQLITE_STATIC);
  int rc = sqlite3_step(st);
  *yes = rc == SQLITE_ROW;
  sqlite3_finalize(st);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : fail(s, s->db, "reading the schema");
}

static int migrate_v3(sqlite_store *s) {
  static const struct {
    const char *column, *add;
  } cols[] = {
      {"queue",
       "ALTER TABLE coda_tasks ADD COLUMN queue TEXT NOT NULL DEFAULT 'default'"},
      {"token", "ALTER TABLE coda_tasks ADD COLUMN token INTEGER NOT NULL DEFAULT 0"},
  };
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < sizeof cols / sizeof cols[0]; i++) {
    int yes;
    if ((rc = has_column(s, cols[i].column, &yes)) == 0 && !yes)
      rc = exec(s, cols[i].add, "adding a column");
  }
  return rc ? rc : exec(s, schema_v3, "adding queues and leases");
}

static int add_columns(sqlite_store *s, const char *table, const char *const *cols,
                       int n) {
  int rc = 0;
  for (int i = 0; rc == 0 && i < n; i++) {
    char q[256];
    snprintf(q, sizeof q, "ALTER TABLE %s ADD COLUMN %s", table, cols[i]);
    rc = exec(s, q, "adding a column");
  }
  return rc;
}

static int migrate_v4(sqlite_store *s) {
  static const char *const tasks[] = {
      "trace TEXT", "request_id INTEGER NOT NULL DEFAULT 0", "origin TEXT",
      "cancel_req INTEGER NOT NULL DEFAULT 0", "errors TEXT"};
  static const char *const queues[] = {"processed INTEGER NOT NULL DEFAULT 0",
                                       "failed INTEGER NOT NULL DEFAULT 0"};
  int rc = add_columns(s, "coda_tasks", tasks, 5);
  if (rc == 0)
    rc = add_columns(s, "coda_queues", queues, 2);
  if (rc == 0)
    rc = exec(s,
              "INSERT INTO coda_queues(name) SELECT DISTINCT queue FROM coda_tasks "
              "WHERE true ON CONFLICT DO NOTHING",
              "listing the queues");
  return rc ? rc : exec(s, schema_v4, "indexing queues");
}

/* Brings the schema to SCHEMA_VERSION. Each step is one migration; a later
 * version adds `case 1:` and so on, falling through. */
static int migrate(sqlite_store *s, const char *path) {
  int v = 0, rc;
  if ((rc = user_version(s, &v)) != 0)
    return rc;
  if (v == SCHEMA_VERSION)
    return 0;
  if (v > SCHEMA_VERSION) {
    snprintf(s->err, sizeof s->err,
             "sqlite store: %.300s has schema version %d, newer than this coda (%d)",
             path, v, SCHEMA_VERSION);
    return CODA_ESTORE;
  }
  if ((rc = exec(s, "BEGIN IMMEDIATE", "migrating")) != 0)
    return rc;
  switch (v) {
  case 0:
    rc = exec(s, schema_v1, "creating the schema");
    /* fall through */
  case 1:
    if (rc == 0)
      rc = exec(s, schema_v2, "indexing finished tasks");
    /* fall through */
  case 2:
    if (rc == 0)
      rc = migrate_v3(s);
    /* fall through */
  case 3:
    if (rc == 0)
      rc = migrate_v4(s);
    /* fall through */
  case 4:
    if (rc == 0)
      rc = exec(s, schema_v5, "indexing finished tasks");
    break;
  }
  char set[64];
  snprintf(set, sizeof set, "PRAGMA user_version=%d", SCHEMA_VERSION);
  if (rc == 0)
    rc = exec(s, set, "migrating");
  if (rc == 0)
    rc = exec(s, "COMMIT", "migrating");
  if (rc != 0)
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
  return rc;
}

static int open_db(sqlite_store *s, const char *path, int flags, sqlite3 **db) {
  if (sqlite3_open_v2(path, db, flags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK)
    return fail(s, *db, "opening the file");
  sqlite3_busy_timeout(*db, BUSY_TIMEOUT_MS);
  sqlite3_extended_result_codes(*db, 1);
  return 0;
}

static int configure(sqlite_store *s, const char *path, long max_bytes) {
  int rc = open_db(s, path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &s->db);
  if (rc)
    return rc;
  if (sqlite3_db_readonly(s->db, "main") == 1) {
    snprintf(s->err, sizeof s->err, "sqlite store: %.300s is read-only", path);
    return CODA_ESTORE;
  }
  /* The first statement that reads the file tells a corrupt one apart. */
  if ((rc = exec(s, "PRAGMA journal_mode=WAL", "switching to WAL (is it a database?)")) ||
      (rc = exec(s, "PRAGMA synchronous=FULL", "setting synchronous")) ||
      (rc = exec(s, "PRAGMA foreign_keys=OFF", "configuring")))
    return rc;
  if ((rc = migrate(s, path)) != 0)
    return rc;
  if ((rc = exec(s, index_names, "indexing task names")) != 0)
    return rc;
  /* Checkpoints run on the checkpointer's connection, not in a commit. */
  if ((rc = exec(s, "PRAGMA wal_autocheckpoint=0", "configuring")) != 0)
    return rc;
  sqlite3_wal_hook(s->db, on_wal_commit, s);
  if (max_bytes > 0) {
    /* New tasks stop at max_bytes (see sqlite_begin); the hard limit sits
     * above it so the outcomes of accepted tasks still fit. */
    char q[96];
    long room = max_bytes / 4 > (256 << 10) ? max_bytes / 4 : (256 << 10);
    sqlite3_stmt *ps;
    s->page_size = 4096;
    if (sqlite3_prepare_v2(s->db, "PRAGMA page_size", -1, &ps, NULL) == SQLITE_OK) {
      if (sqlite3_step(ps) == SQLITE_ROW)
        s->page_size = (long)sqlite3_column_int64(ps, 0);
      sqlite3_finalize(ps);
    }
    long pages = (max_bytes + room) / s->page_size;
    s->max_bytes = max_bytes;
    snprintf(q, sizeof q, "PRAGMA max_page_count=%ld", pages);
    if ((rc = exec(s, q, "setting the size cap")) != 0)
      return rc;
  }
  if ((rc = exec(s, "PRAGMA quick_check(1)", "checking the file")) != 0)
    return rc;
  for (int i = 0; i < ST_COUNT_; i++)
    if (sqlite3_prepare_v3(s->db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i],
                           NULL) != SQLITE_OK)
      return fail(s, s->db, "preparing statements");
  if ((rc = open_db(s, path, SQLITE_OPEN_READONLY, &s->rdb)) != 0)
    return rc;
  if (sqlite3_prepare_v3(s->rdb, "SELECT " RECORD_COLUMNS " FROM coda_tasks WHERE id=?1",
                         -1, SQLITE_PREPARE_PERSISTENT, &s->get, NULL) != SQLITE_OK)
    return fail(s, s->rdb, "preparing statements");
  if (sqlite3_prepare_v3(s->rdb,
                         "SELECT " RECORD_COLUMNS " FROM coda_tasks "
                         "WHERE state=?1 AND id>?2 ORDER BY id LIMIT ?3",
                         -1, SQLITE_PREPARE_PERSISTENT, &s->list, NULL) != SQLITE_OK)
    return fail(s, s->rdb, "preparing statements");
  if (sqlite3_prepare_v3(s->rdb, "SELECT name,paused,processed,failed FROM coda_queues",
                         -1, SQLITE_PREPARE_PERSISTENT, &s->stats_queues,
                         NULL) != SQLITE_OK ||
      sqlite3_prepare_v3(s->rdb,
                         "SELECT queue,state,count(*),"
                         "sum(state IN (0,3) AND owned=0 AND run_at>?1),"
                         "min(CASE WHEN state IN (0,3) AND owned=0 AND run_at<=?1 "
                         "THEN run_at END) FROM coda_tasks GROUP BY queue,state",
                         -1, SQLITE_PREPARE_PERSISTENT, &s->stats_counts,
                         NULL) != SQLITE_OK)
    return fail(s, s->rdb, "preparing statements");
  if ((rc = open_db(s, path, SQLITE_OPEN_READWRITE, &s->cdb)) != 0)
    return rc;
  /* A renewal lost to a power cut does not matter: recover() releases
   * every claim at the next start. */
  if ((rc = open_db(s, path, SQLITE_OPEN_READWRITE, &s->hdb)) != 0)
    return rc;
  if (sqlite3_exec(s->hdb, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL) != SQLITE_OK ||
      sqlite3_prepare_v3(s->hdb,
                         "UPDATE coda_tasks SET lease_until=?1 WHERE id=?2 AND token=?3 "
                         "AND owned=1 RETURNING cancel_req",
                         -1, SQLITE_PREPARE_PERSISTENT, &s->renew, NULL) != SQLITE_OK)
    return fail(s, s->hdb, "preparing statements");
  if (uv_thread_create(&s->ckpt_thread, checkpointer, s) != 0) {
    snprintf(s->err, sizeof s->err, "sqlite store: cannot start the checkpointer");
    return CODA_ESTORE;
  }
  s->ckpt_running = 1;
  return 0;
}

static void sqlite_close(coda__store *base) {
  sqlite_store *s = (sqlite_store *)base;
  if (s->ckpt_running) {
    uv_mutex_lock(&s->ckpt_mu);
    s->ckpt_stop = 1;
    uv_cond_signal(&s->ckpt_cond);
    uv_mutex_unlock(&s->ckpt_mu);
    uv_thread_join(&s->ckpt_thread);
  }
  sqlite3_close(s->cdb);
  sqlite3_finalize(s->renew);
  sqlite3_close(s->hdb);
  uv_mutex_destroy(&s->renew_mu);
  uv_cond_destroy(&s->turn_cond);
  uv_mutex_destroy(&s->turn_mu);
  uv_mutex_destroy(&s->node_mu);
  coda__node_table_free(&s->nodes);
  sqlite3_finalize(s->stats_queues);
  sqlite3_finalize(s->stats_counts);
  for (int i = 0; i < s->nserved; i++)
    free(s->served[i]);
  free(s->served);
  free(s->refused);
  uv_cond_destroy(&s->ckpt_cond);
  uv_mutex_destroy(&s->ckpt_mu);
  for (int i = 0; i < ST_COUNT_; i++)
    sqlite3_finalize(s->st[i]);
  sqlite3_finalize(s->get);
  sqlite3_finalize(s->list);
  for (int i = 0; i < (int)(sizeof s->find / sizeof *s->find); i++)
    sqlite3_finalize(s->find[i]);
  sqlite3_close(s->rdb);
  sqlite3_close(s->db);
  if (s->lock_fd >= 0)
    close(s->lock_fd); /* releases the flock */
  uv_mutex_destroy(&s->read_mu);
  free(s);
}

int coda__sqlite_store_open(const char *path, long max_bytes, coda__store **out,
                            char *err, size_t errlen) {
  *out = NULL;
  sqlite_store *s = calloc(1, sizeof *s);
  if (!s)
    return CODA_ENOMEM;
  s->base.m = &sqlite_methods;
  s->lock_fd = -1;
  uv_mutex_init(&s->read_mu);
  uv_mutex_init(&s->renew_mu);
  uv_mutex_init(&s->turn_mu);
  uv_cond_init(&s->turn_cond);
  uv_mutex_init(&s->node_mu);
  uv_mutex_init(&s->ckpt_mu);
  uv_cond_init(&s->ckpt_cond);
  int rc = 0;
  if (make_parent_dirs(path) != 0) {
    snprintf(s->err, sizeof s->err,
             "sqlite store: cannot create the directory of %.300s: %s", path,
             strerror(errno));
    rc = CODA_ESTORE;
  }
  if (rc == 0)
    rc = take_lock(s, path);
  if (rc == 0)
    rc = configure(s, path, max_bytes);
  if (rc != 0) {
    snprintf(err, errlen, "%s", s->err);
    sqlite_close(&s->base);
    return rc;
  }
  *out = &s->base;
  return 0;
}

/* ---- the store thread's calls --------------------------------------------- */

static int sqlite_recover(coda__store *base, int64_t now) {
  sqlite_store *s = (sqlite_store *)base;
  /* The flock proves the previous owner dead: its claims are void. Those
   * an operator asked to stop end cancelled (store.h version 3). */
  char cancelled[200];
  snprintf(cancelled, sizeof cancelled,
           "UPDATE coda_tasks SET owned=0, lease_until=0, state=5, finished_at=%lld "
           "WHERE owned=1 AND state IN (0,1) AND cancel_req=1",
           (long long)now);
  if (exec(s, cancelled, "recovering claimed tasks") != 0)
    return CODA_ESTORE;
  if (exec(s,
           "UPDATE coda_tasks SET owned=0, lease_until=0, state=0 "
           "WHERE owned=1 AND state IN (0,1)",
           "recovering claimed tasks") != 0)
    return CODA_ESTORE;
  return sqlite3_changes(s->db);
}

/* A queue's row in coda_queues (for queue_stats()), inserted once per
 * name while no rollback intervenes, not at every add. */
static int note_queue(sqlite_store *s, const char *queue) {
  for (int i = 0; i < s->nknown; i++)
    if (strcmp(s->known[i], queue) == 0)
      return 0;
  sqlite3_stmt *known = s->st[ST_QUEUE_KNOWN];
  sqlite3_bind_text(known, 1, queue, -1, SQLITE_STATIC);
  int rc = step_done(s, known, "writing a task's queue");
  if (rc == 0 && strlen(queue) < sizeof s->known[0]) {
    int at = s->nknown < QUEUE_CACHE ? s->nknown++ : s->next_known++ % QUEUE_CACHE;
    snprintf(s->known[at], sizeof s->known[0], "%s", queue);
  }
  return rc;
}

static int write_total(sqlite_store *s, const char *queue, long processed, long failed) {
  sqlite3_stmt *st = s->st[ST_QUEUE_TOTALS];
  sqlite3_bind_text(st, 1, queue, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, processed);
  sqlite3_bind_int64(st, 3, failed);
  return step_done(s, st, "counting tasks' ends");
}

/* One finish in its queue's totals of this batch (commit() writes them);
 * a name too long or a seventeenth queue is written at once. */
static int add_total(sqlite_store *s, const char *queue, int succeeded) {
  for (int i = 0; i < s->ntotals; i++)
    if (strcmp(s->totals[i].name, queue) == 0) {
      s->totals[i].processed += succeeded;
      s->totals[i].failed += !succeeded;
      return 0;
    }
  if (s->ntotals == QUEUE_CACHE || strlen(queue) >= sizeof s->totals[0].name)
    return write_total(s, queue, succeeded, !succeeded);
  struct queue_total *t = &s->totals[s->ntotals++];
  snprintf(t->name, sizeof t->name, "%s", queue);
  t->processed = succeeded;
  t->failed = !succeeded;
  return 0;
}

static int write_totals(sqlite_store *s) {
  int rc = 0;
  for (int i = 0; rc == 0 && i < s->ntotals; i++)
    rc = write_total(s, s->totals[i].name, s->totals[i].processed, s->totals[i].failed);
  s->ntotals = 0;
  return rc;
}

/* The statements run once per task or more often (an add, an end,
 * progress), which must not build a temporary b-tree, a sorter or an
 * automatic index at each run: an IN list of three values or more in a
 * partial index's predicate does (schema_v5), and so do RETURNING and a
 * subquery. The claim (once per batch) and the renewal (once per lease
 * period) are left out. */
static const int per_task[] = {ST_INSERT,     ST_FINISH,          ST_FINISH_READ,
                               ST_PROGRESS,   ST_PROGRESS_LEASED, ST_QUEUE_TOTALS,
                               ST_QUEUE_KNOWN};

int coda__sqlite_store_check_plans(coda__store *base, char *why, size_t cap) {
  sqlite_store *s = (sqlite_store *)base;
  for (size_t i = 0; i < sizeof per_task / sizeof per_task[0]; i++) {
    char q[2048];
    snprintf(q, sizeof q, "EXPLAIN %s", sqlite3_sql(s->st[per_task[i]]));
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, q, -1, &st, NULL) != SQLITE_OK) {
      snprintf(why, cap, "EXPLAIN of %.200s: %s", q + 8, sqlite3_errmsg(s->db));
      return CODA_ESTORE;
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      const char *op = (const char *)sqlite3_column_text(st, 1);
      if (op && (strcmp(op, "OpenEphemeral") == 0 || strcmp(op, "SorterOpen") == 0 ||
                 strcmp(op, "OpenAutoindex") == 0)) {
        snprintf(why, cap, "%s in: %.300s", op, q + 8);
        sqlite3_finalize(st);
        return CODA_ESTATE;
      }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
      snprintf(why, cap, "EXPLAIN of %.200s failed", q + 8);
      return CODA_ESTORE;
    }
  }
  return 0;
}

int coda__sqlite_store_synchronous(coda__store *base) {
  sqlite_store *s = (sqlite_store *)base;
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(s->db, "PRAGMA synchronous", -1, &st, NULL) != SQLITE_OK)
    return -1;
  int v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
  sqlite3_finalize(st);
  return v;
}

/* The store thread's batch ended (committed or rolled back): a waiting
 * renewal goes first. */
static void end_turn(sqlite_store *s) {
  uv_mutex_lock(&s->turn_mu);
  s->writing = 0;
  uv_cond_broadcast(&s->turn_cond);
  uv_mutex_unlock(&s->turn_mu);
}

static void end_lazy(sqlite_store *s);

/* PRAGMA synchronous=LEVEL, prepared anew each time: SQLite applies this
 * pragma when it compiles the statement, not when it runs it, so a cached
 * statement stepped again changes nothing unless something expired it in
 * between (a lazy batch was then written with an fsync, or not, by chance). */
static int set_synchronous(sqlite_store *s, const char *level) {
  char q[40];
  snprintf(q, sizeof q, "PRAGMA synchronous=%s", level);
  return sqlite3_exec(s->db, q, NULL, NULL, NULL);
}

static int begin_batch(sqlite_store *s) {
  if (s->max_bytes) {
    sqlite3_stmt *st = s->st[ST_PAGES];
    long pages = sqlite3_step(st) == SQLITE_ROW ? (long)sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    s->full = pages * s->page_size >= s->max_bytes;
  }
  s->nrefused = 0;
  s->ntotals = 0;
  uv_mutex_lock(&s->turn_mu);
  while (s->renew_waiting)
    uv_cond_wait(&s->turn_cond, &s->turn_mu);
  s->writing = 1;
  uv_mutex_unlock(&s->turn_mu);
  int rc = step_done(s, s->st[ST_BEGIN], "beginning a batch");
  if (rc)
    end_turn(s);
  return rc;
}

static int sqlite_begin(coda__store *base) {
  sqlite_store *s = (sqlite_store *)base;
  end_lazy(s); /* if a failed lazy batch left it at NORMAL */
  if (s->lazy) {
    snprintf(s->err, sizeof s->err, "sqlite store: cannot return to synchronous=FULL: %s",
             sqlite3_errmsg(s->db));
    return CODA_ESTORE;
  }
  return begin_batch(s);
}

/* Back to synchronous=FULL after a lazy batch. SQLite refuses that change
 * inside a transaction ("Safety level may not be changed inside a
 * transaction"), so after a failed commit it waits for the rollback; until
 * it took, `lazy` stays set, and sqlite_begin() refuses a durable batch
 * rather than commit it without an fsync. */
static void end_lazy(sqlite_store *s) {
  if (s->lazy && sqlite3_get_autocommit(s->db) && set_synchronous(s, "FULL") == SQLITE_OK)
    s->lazy = 0;
}

static int sqlite_commit(coda__store *base) {
  sqlite_store *s = (sqlite_store *)base;
  int rc = write_totals(s);
  rc = rc ? rc : step_done(s, s->st[ST_COMMIT], "committing a batch");
  if (rc == 0) { /* else the engine rolls back, which ends both */
    end_lazy(s);
    end_turn(s);
  }
  return rc;
}

/* synchronous=NORMAL in WAL mode: the commit is written, not fsync'd; the
 * next FULL commit's fsync of the WAL file (or a checkpoint) covers it. A
 * kill -9 loses nothing (the kernel has the pages); a power cut may lose
 * the batch, which only runs its tasks again. */
static int sqlite_begin_lazy(coda__store *base) {
  sqlite_store *s = (sqlite_store *)base;
  end_lazy(s); /* if a failed lazy batch left it at NORMAL */
  /* When NORMAL cannot be set, the batch is written as a durable one. */
  s->lazy = set_synchronous(s, "NORMAL") == SQLITE_OK;
  int rc = begin_batch(s);
  if (rc)
    end_lazy(s);
  return rc;
}

static void sqlite_rollback(coda__store *base) {
  sqlite_store *s = (sqlite_store *)base;
  if (!sqlite3_get_autocommit(s->db)) {
    sqlite3_step(s->st[ST_ROLLBACK]);
    sqlite3_reset(s->st[ST_ROLLBACK]);
  }
  s->nrefused = 0;
  s->ntotals = 0;
  s->nknown = 0;
  end_lazy(s);
  end_turn(s);
}

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *v) {
  if (v)
    sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null(st, i);
}

static void bind_blob_or_null(sqlite3_stmt *st, int i, const void *p, size_t n) {
  if (p)
    sqlite3_bind_blob64(st, i, p, n, SQLITE_STATIC);
  else
    sqlite3_bind_null(st, i);
}

/* Whether the row with this id has this key (the same idempotency key). */
static int same_key(sqlite_store *s, uint64_t id, const char *key) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(s->db, "SELECT key FROM coda_tasks WHERE id=?1", -1, &st,
                         NULL) != SQLITE_OK)
    return 0;
  sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
  int same = 0;
  if (sqlite3_step(st) == SQLITE_ROW) {
    const char *k = (const char *)sqlite3_column_text(st, 0);
    same = k && key && strcmp(k, key) == 0;
  }
  sqlite3_finalize(st);
  return same;
}

static int sqlite_enqueue(coda__store *base, const coda__task_record *r, int owned,
                          int64_t lease_until) {
  sqlite_store *s = (sqlite_store *)base;
  sqlite3_stmt *st = s->st[ST_INSERT];
  if (s->full) {
    snprintf(s->err, sizeof s->err, "sqlite store: full (its cap is %ld bytes)",
             s->max_bytes);
    return CODA_ESTORE;
  }
  sqlite3_bind_int64(st, 1, (sqlite3_int64)r->id);
  sqlite3_bind_text(st, 2, r->name, -1, SQLITE_STATIC);
  bind_text_or_null(st, 3, r->key);
  sqlite3_bind_blob64(st, 4, r->args ? r->args : "", r->args_len, SQLITE_STATIC);
  sqlite3_bind_int(st, 5, r->attempts);
  sqlite3_bind_int(st, 6, r->max_attempts);
  sqlite3_bind_int64(st, 7, r->created_at);
  sqlite3_bind_int64(st, 8, r->run_at);
  /* Also the state and the token: an owned enqueue is the task's first
   * claim, running (1) with token 1; an unowned one is queued (0), token 0. */
  sqlite3_bind_int(st, 9, owned ? 1 : 0);
  sqlite3_bind_int64(st, 10, owned ? lease_until : 0);
  const char *queue = r->queue ? r->queue : "default";
  sqlite3_bind_text(st, 11, queue, -1, SQLITE_STATIC);
  bind_text_or_null(st, 12, r->trace);
  sqlite3_bind_int64(st, 13, (sqlite3_int64)r->request_id);
  bind_text_or_null(st, 14, r->origin);
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc == SQLITE_DONE)
    return note_queue(s, queue);
  if (rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
    if (same_key(s, r->id, r->key))
      return CODA_EEXIST;
    snprintf(s->err, sizeof s->err, "sqlite store: task id %llu is taken by another key",
             (unsigned long long)r->id);
    return CODA_ESTORE;
  }
  return fail(s, s->db, "writing a task");
}

/* Reads a row of CLAIMED_COLUMNS. */
static void read_claimed(sqlite3_stmt *st, coda__task_record *r) {
  memset(r, 0, sizeof *r);
  r->id = (uint64_t)sqlite3_column_int64(st, 0);
  r->name = (const char *)sqlite3_column_text(st, 1);
  r->key = (const char *)sqlite3_column_text(st, 2);
  r->args = sqlite3_column_blob(st, 3);
  r->args_len = (size_t)sqlite3_column_bytes(st, 3);
  r->state = CODA_STATE_RUNNING;
  r->attempts = sqlite3_column_int(st, 4);
  r->max_attempts = sqlite3_column_int(st, 5);
  r->created_at = sqlite3_column_int64(st, 6);
  r->run_at = sqlite3_column_int64(st, 7);
  r->progress = sqlite3_column_double(st, 8);
  r->lease = (uint64_t)sqlite3_column_int64(st, 9);
  r->queue = (const char *)sqlite3_column_text(st, 10);
  r->trace = (const char *)sqlite3_column_text(st, 11); /* for the attempt's log lines */
}

/* Steps a claim or expire statement (bound), handing each row to fn.
 * RETURNING rows are all computed by the first step, so the callback may
 * stop early without leaving a task half claimed. */
static int hand_rows(sqlite_store *s, sqlite3_stmt *st, coda__claim_fn fn, void *user,
                     const char *what) {
  int n = 0, rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    coda__task_record r;
    read_claimed(st, &r);
    n++;
    fn(user, &r);
  }
  sqlite3_reset(st);
  return rc == SQLITE_DONE ? n : fail(s, s->db, what);
}

static int sqlite_claim(coda__store *base, int64_t now, int64_t lease_until, int max,
                        coda__claim_fn fn, void *user) {
  sqlite_store *s = (sqlite_store *)base;
  int n = 0;
  /* Every queue, or the served ones one at a time, in their order. */
  for (int i = 0; i == 0 || i < s->nserved; i++) {
    sqlite3_stmt *st = s->st[s->nserved ? ST_CLAIM_QUEUE : ST_CLAIM];
    sqlite3_bind_int64(st, 1, lease_until);
    sqlite3_bind_int64(st, 2, now);
    sqlite3_bind_int(st, 3, max - n);
    if (s->nserved)
      sqlite3_bind_text(st, 4, s->served[i], -1, SQLITE_STATIC);
    int got = hand_rows(s, st, fn, user, "claiming tasks");
    if (got < 0)
      return got;
    if ((n += got) == max)
      break;
  }
  return n;
}

/* Remembers a write that changed nothing (its claim no longer holds) for
 * refused(). */
static void refuse(sqlite_store *s, uint64_t id, uint64_t lease) {
  if (s->nrefused == s->refused_cap) {
    int cap = s->refused_cap ? s->refused_cap * 2 : 16;
    coda__lease *p = realloc(s->refused, (size_t)cap * sizeof *p);
    if (!p)
      return; /* refused all the same, only not reported */
    s->refused = p;
    s->refused_cap = cap;
  }
  s->refused[s->nrefused++] = (coda__lease){id, lease};
}

/* What finish() adds to a row it holds (store.h version 3): the state (a
 * failure of a task whose cancel was requested is its end), the history
 * with this failure (*errors, malloc'd; NULL: none), its queue's totals.
 * *held 0: the row is not held under that token (finish() refuses it). */
static int finish_extras(sqlite_store *s, const coda__task_record *r, int *held,
                         coda_task_state *state, char **errors) {
  sqlite3_stmt *st = s->st[ST_FINISH_READ];
  sqlite3_bind_int64(st, 1, (sqlite3_int64)r->id);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)r->lease);
  int rc = sqlite3_step(st);
  *held = rc == SQLITE_ROW;
  *state = r->state;
  *errors = NULL;
  if (rc != SQLITE_ROW) {
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : fail(s, s->db, "recording a task's end");
  }
  if (*state == CODA_STATE_FAILED && sqlite3_column_int(st, 0))
    *state = CODA_STATE_CANCELLED;
  coda_task_error *old = NULL;
  int n = coda__errors_from_json((const char *)sqlite3_column_text(st, 1),
                                 (size_t)sqlite3_column_bytes(st, 1), &old);
  char queue[128];
  snprintf(queue, sizeof queue, "%s", (const char *)sqlite3_column_text(st, 2));
  sqlite3_reset(st);
  /* The history as the row had it, plus this failure (its strings are
   * copied: `old` is one block). */
  coda_task_error *list = NULL;
  int len = 0, ok = 1;
  for (int i = 0; ok && i < n; i++)
    ok = coda__errors_push(&list, &len, old[i].attempt, old[i].at, old[i].error) == 0;
  free(old);
  if (ok && *state != CODA_STATE_SUCCEEDED)
    ok = coda__errors_push(&list, &len, r->attempts, r->finished_at, r->error) == 0;
  *errors = ok && len ? coda__errors_to_json(list, len) : NULL;
  coda__errors_free(list, len);
  return add_total(s, queue, *state == CODA_STATE_SUCCEEDED);
}

static int sqlite_finish(coda__store *base, const coda__task_record *r) {
  sqlite_store *s = (sqlite_store *)base;
  int held;
  coda_task_state state;
  char *errors;
  int rc = finish_extras(s, r, &held, &state, &errors);
  if (rc)
    return rc;
  sqlite3_stmt *st = s->st[ST_FINISH];
  sqlite3_bind_int64(st, 1, (sqlite3_int64)r->id);
  sqlite3_bind_int(st, 2, (int)state);
  (void)held; /* not held: the update below changes nothing */
  if (errors) /* NULL (none, or out of memory): the history stays as it was */
    sqlite3_bind_text(st, 11, errors, -1, free);
  else
    sqlite3_bind_null(st, 11);
  sqlite3_bind_int(st, 3, r->attempts);
  sqlite3_bind_int64(st, 4, r->run_at);
  sqlite3_bind_int64(st, 5, r->started_at);
  sqlite3_bind_int64(st, 6, r->finished_at);
  sqlite3_bind_double(st, 7, r->progress);
  bind_text_or_null(st, 8, r->error);
  bind_blob_or_null(st, 9, r->result, r->result_len);
  sqlite3_bind_int64(st, 10, (sqlite3_int64)r->lease);
  rc = step_done(s, st, "recording a task's end");
  if (rc == 0 && sqlite3_changes(s->db) == 0)
    refuse(s, r->id, r->lease);
  return rc;
}

static int sqlite_progress(coda__store *base, uint64_t id, double progress) {
  sqlite_store *s = (sqlite_store *)base;
  sqlite3_stmt *st = s->st[ST_PROGRESS];
  sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
  sqlite3_bind_double(st, 2, progress);
  return step_done(s, st, "recording progress");
}

static int sqlite_reserve_ids(coda__store *base, uint64_t count, uint64_t *first) {
  sqlite_store *s = (sqlite_store *)base;
  sqlite3_stmt *st = s->st[ST_RESERVE];
  sqlite3_bind_int64(st, 1, (sqlite3_int64)count);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW)
    *first = (uint64_t)sqlite3_column_int64(st, 0) - count;
  sqlite3_reset(st);
  return rc == SQLITE_ROW ? 0 : fail(s, s->db, "reserving ids");
}

static int64_t sqlite_next_due(coda__store *base) {
  sqlite_store *s = (sqlite_store *)base;
  int64_t when = 0;
  for (int i = 0; i == 0 || i < s->nserved; i++) {
    sqlite3_stmt *st = s->st[s->nserved ? ST_NEXT_DUE_QUEUE : ST_NEXT_DUE];
    if (s->nserved)
      sqlite3_bind_text(st, 1, s->served[i], -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
      int64_t t = sqlite3_column_int64(st, 0); /* NULL (none) reads as 0 */
      if (t && (!when || t < when))
        when = t;
    }
    sqlite3_reset(st);
  }
  return when;
}

/* Reads a row of RECORD_COLUMNS; returns the error history's block, which
 * the caller frees once it is done with r (NULL: none). */
static coda_task_error *read_record(sqlite3_stmt *st, coda__task_record *r) {
  r->id = (uint64_t)sqlite3_column_int64(st, 0);
  r->name = (const char *)sqlite3_column_text(st, 1);
  r->key = (const char *)sqlite3_column_text(st, 2);
  r->state = (coda_task_state)sqlite3_column_int(st, 3);
  r->attempts = sqlite3_column_int(st, 4);
  r->max_attempts = sqlite3_column_int(st, 5);
  r->created_at = sqlite3_column_int64(st, 6);
  r->run_at = sqlite3_column_int64(st, 7);
  r->started_at = sqlite3_column_int64(st, 8);
  r->finished_at = sqlite3_column_int64(st, 9);
  r->progress = sqlite3_column_double(st, 10);
  r->error = (const char *)sqlite3_column_text(st, 11);
  r->result = sqlite3_column_blob(st, 12);
  r->result_len = (size_t)sqlite3_column_bytes(st, 12);
  r->queue = (const char *)sqlite3_column_text(st, 13);
  r->trace = (const char *)sqlite3_column_text(st, 14);
  r->request_id = (uint64_t)sqlite3_column_int64(st, 15);
  r->origin = (const char *)sqlite3_column_text(st, 16);
  r->cancel_requested = sqlite3_column_int(st, 17);
  coda_task_error *errors = NULL;
  r->n_errors = coda__errors_from_json((const char *)sqlite3_column_text(st, 18),
                                       (size_t)sqlite3_column_bytes(st, 18), &errors);
  r->errors = errors;
  r->args = sqlite3_column_blob(st, 19);
  r->args_len = (size_t)sqlite3_column_bytes(st, 19);
  return errors;
}

static int sqlite_get(coda__store *base, uint64_t id, coda_task_info **out) {
  sqlite_store *s = (sqlite_store *)base;
  uv_mutex_lock(&s->read_mu);
  sqlite3_stmt *st = s->get;
  sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
  int rc = sqlite3_step(st), ret = CODA_ENOTFOUND;
  if (rc == SQLITE_ROW) {
    coda__task_record r = {0};
    coda_task_error *errors = read_record(st, &r);
    *out = coda__task_info_from_record(&r);
    free(errors);
    ret = *out ? 0 : CODA_ENOMEM;
  } else if (rc != SQLITE_DONE) {
    ret = CODA_ESTORE;
  }
  sqlite3_reset(st);
  uv_mutex_unlock(&s->read_mu);
  return ret;
}

static int sqlite_list(coda__store *base, coda_task_state state, uint64_t after_id,
                       int limit, coda_task_list_fn fn, void *user) {
  sqlite_store *s = (sqlite_store *)base;
  uv_mutex_lock(&s->read_mu);
  sqlite3_stmt *st = s->list;
  sqlite3_bind_int(st, 1, (int)state);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)after_id);
  sqlite3_bind_int(st, 3, limit);
  coda__info_list out = {0};
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    coda__task_record r = {0};
    coda_task_error *errors = read_record(st, &r);
    int added = coda__info_list_add(&out, &r);
    free(errors);
    if (added != 0) {
      rc = SQLITE_NOMEM;
      break;
    }
  }
  sqlite3_reset(st);
  uv_mutex_unlock(&s->read_mu);
  if (rc != SQLITE_DONE) {
    coda__info_list_deliver(&out, NULL, NULL);
    return rc == SQLITE_NOMEM ? CODA_ENOMEM : CODA_ESTORE;
  }
  return coda__info_list_deliver(&out, fn, user);
}

/* ---- find (version 2) -------------------------------------------------------- */

enum { FIND_STATE = 1, FIND_NAME = 2, FIND_QUEUE = 4, FIND_STATES = 8 };

/* Whether the table has a queue column (the queues' schema): until it
 * does, every task is in "default". Under read_mu. */
static int has_queue_column(sqlite_store *s) {
  if (s->queue_column == 0) {
    sqlite3_stmt *st;
    s->queue_column = -1;
    if (sqlite3_prepare_v2(
            s->rdb, "SELECT 1 FROM pragma_table_info('coda_tasks') WHERE name='queue'",
            -1, &st, NULL) == SQLITE_OK) {
      if (sqlite3_step(st) == SQLITE_ROW)
        s->queue_column = 1;
      sqlite3_finalize(st);
    }
  }
  return s->queue_column > 0;
}

/* The statement for this shape of filter, so that each one uses the index
 * that fits it (by name: coda_tasks_name) rather than one query with
 * "?N IS NULL OR" that the planner cannot index. Under read_mu. */
static sqlite3_stmt *find_statement(sqlite_store *s, int shape) {
  if (s->find[shape])
    return s->find[shape];
  char q[512];
  snprintf(q, sizeof q,
           "SELECT " RECORD_COLUMNS " FROM coda_tasks WHERE id>?1%s%s%s "
           "ORDER BY id LIMIT ?5",
           shape & FIND_STATES  ? " AND ((1<<state)&?2)!=0"
           : shape & FIND_STATE ? " AND state=?2"
                                : "",
           shape & FIND_NAME ? " AND name=?3" : "",
           shape & FIND_QUEUE ? " AND coalesce(queue,'default')=?4" : "");
  if (sqlite3_prepare_v3(s->rdb, q, -1, SQLITE_PREPARE_PERSISTENT, &s->find[shape],
                         NULL) != SQLITE_OK)
    fail(s, s->rdb, "preparing a search");
  return s->find[shape];
}

/* Reads the rows of a prepared search into out. SQLITE_DONE or an error. */
static int read_rows(sqlite3_stmt *st, coda__info_list *out) {
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    coda__task_record r = {0};
    coda_task_error *errors = read_record(st, &r);
    int added = coda__info_list_add(out, &r);
    free(errors);
    if (added != 0) {
      rc = SQLITE_NOMEM;
      break;
    }
  }
  sqlite3_reset(st);
  return rc;
}

static int sqlite_find(coda__store *base, const coda__task_filter *f,
                       coda_task_list_fn fn, void *user) {
  sqlite_store *s = (sqlite_store *)base;
  coda__info_list out = {0};
  int rc = SQLITE_DONE;
  uv_mutex_lock(&s->read_mu);
  int shape = (f->states       ? FIND_STATES
               : f->state >= 0 ? FIND_STATE
                               : 0) |
              (f->name ? FIND_NAME : 0);
  int none = 0; /* no row can match */
  if (f->queue && has_queue_column(s))
    shape |= FIND_QUEUE;
  else if (f->queue)
    none = strcmp(f->queue, "default") != 0;
  sqlite3_stmt *st = none ? NULL : find_statement(s, shape);
  if (!none && !st) {
    rc = SQLITE_ERROR;
  } else if (st) {
    sqlite3_bind_int64(st, 1, (sqlite3_int64)f->after_id);
    if (shape & FIND_STATES)
      sqlite3_bind_int64(st, 2, (sqlite3_int64)f->states);
    else if (shape & FIND_STATE)
      sqlite3_bind_int(st, 2, f->state);
    if (shape & FIND_NAME)
      sqlite3_bind_text(st, 3, f->name, -1, SQLITE_STATIC);
    if (shape & FIND_QUEUE)
      sqlite3_bind_text(st, 4, f->queue, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 5, f->limit > 0 ? f->limit : -1); /* -1: no limit */
    rc = read_rows(st, &out);
    sqlite3_clear_bindings(st);
  }
  uv_mutex_unlock(&s->read_mu);
  if (rc != SQLITE_DONE) {
    coda__info_list_deliver(&out, NULL, NULL);
    return rc == SQLITE_NOMEM ? CODA_ENOMEM : CODA_ESTORE;
  }
  return coda__info_list_deliver(&out, fn, user);
}

static const char *sqlite_errmsg(coda__store *base) {
  return ((sqlite_store *)base)->err;
}

static int sqlite_purge(coda__store *base, int64_t finished_before, int limit) {
  sqlite_store *s = (sqlite_store *)base;
  sqlite3_stmt *st = s->st[ST_PURGE];
  sqlite3_bind_int64(st, 1, finished_before);
  sqlite3_bind_int(st, 2, limit);
  int rc = step_done(s, st, "purging finished tasks");
  if (rc != 0)
    return rc;
  return sqlite3_changes(s->db);
}

/* ---- version 2 ------------------------------------------------------------ */

static int sqlite_serve(coda__store *base, const char *const *queues, int n) {
  sqlite_store *s = (sqlite_store *)base;
  if (n < 0)
    return CODA_EINVAL;
  char **c = n ? calloc((size_t)n, sizeof *c) : NULL;
  int ok = !n || c;
  for (int i = 0; ok && i < n; i++)
    ok = (c[i] = strdup(queues[i])) != NULL;
  if (!ok) {
    for (int i = 0; c && i < n; i++)
      free(c[i]);
    free(c);
    return CODA_ENOMEM;
  }
  for (int i = 0; i < s->nserved; i++)
    free(s->served[i]);
  free(s->served);
  s->served = c;
  s->nserved = n;
  return 0;
}

static int sqlite_pause(coda__store *base, const char *queue, int paused) {
  sqlite_store *s = (sqlite_store *)base;
  sqlite3_stmt *st = s->st[ST_PAUSE];
  sqlite3_bind_text(st, 1, queue, -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 2, paused != 0);
  return step_done(s, st, paused ? "pausing a queue" : "resuming a queue");
}

/* The heartbeat's thread, on its own connection (see the top). */
static int sqlite_renew(coda__store *base, const coda__lease *l, int n,
                        int64_t lease_until, unsigned char *lost) {
  sqlite_store *s = (sqlite_store *)base;
  uv_mutex_lock(&s->renew_mu);
  /* The store thread's batch ends, and no next one starts; a batch that
   * does not end within the busy timeout (a stalled disk) fails the
   * renewal, as SQLite's own lock would, and the heartbeat goes on. */
  uv_mutex_lock(&s->turn_mu);
  s->renew_waiting++;
  uint64_t until = uv_hrtime() + (uint64_t)BUSY_TIMEOUT_MS * 1000000u;
  for (uint64_t now = uv_hrtime(); s->writing && now < until; now = uv_hrtime())
    uv_cond_timedwait(&s->turn_cond, &s->turn_mu, until - now);
  int busy = s->writing;
  uv_mutex_unlock(&s->turn_mu);
  int rc = 0;
  if (busy) {
    snprintf(s->err, sizeof s->err,
             "sqlite store: renewing leases: the store thread's batch took over %d ms",
             BUSY_TIMEOUT_MS);
    rc = CODA_ESTORE;
  } else if (sqlite3_exec(s->hdb, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
    rc = fail(s, s->hdb, "renewing leases");
  }
  for (int i = 0; rc == 0 && i < n; i++) {
    sqlite3_bind_int64(s->renew, 1, lease_until);
    sqlite3_bind_int64(s->renew, 2, (sqlite3_int64)l[i].id);
    sqlite3_bind_int64(s->renew, 3, (sqlite3_int64)l[i].lease);
    int step = sqlite3_step(s->renew);
    /* A row back: held (2: and asked to stop, store.h version 3). */
    int cancel = step == SQLITE_ROW && sqlite3_column_int(s->renew, 0);
    if (step == SQLITE_ROW)
      step = sqlite3_step(s->renew);
    int held = sqlite3_changes(s->hdb) > 0;
    sqlite3_reset(s->renew);
    if (step != SQLITE_DONE)
      rc = fail(s, s->hdb, "renewing leases");
    else
      lost[i] = !held ? 1 : cancel ? 2 : 0;
  }
  if (rc == 0 && sqlite3_exec(s->hdb, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
    rc = fail(s, s->hdb, "renewing leases");
  if (rc && !sqlite3_get_autocommit(s->hdb))
    sqlite3_exec(s->hdb, "ROLLBACK", NULL, NULL, NULL);
  uv_mutex_lock(&s->turn_mu);
  s->renew_waiting--;
  uv_cond_broadcast(&s->turn_cond);
  uv_mutex_unlock(&s->turn_mu);
  uv_mutex_unlock(&s->renew_mu);
  return rc;
}

/* store.h release(), on the store thread's connection in a transaction of
 * its own (outside a batch). SET reads the row as it was, so the state is
 * chosen from the attempts before the claim is taken off. */
static int sqlite_release(coda__store *base, const coda__lease *l, int n) {
  sqlite_store *s = (sqlite_store *)base;
  if (n <= 0)
    return 0;
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(
          s->db,
          "UPDATE coda_tasks SET owned=0, lease_until=0, "
          "attempts=MAX(attempts-1,0), "
          "state=CASE WHEN cancel_req=1 THEN 5 WHEN attempts>1 THEN 3 "
          "ELSE 0 END, finished_at=CASE WHEN cancel_req=1 THEN "
          "CAST(strftime('%s','now') AS INTEGER)*1000 ELSE finished_at END "
          "WHERE id=?1 AND token=?2 AND state=1 AND owned=1",
          -1, &st, NULL) != SQLITE_OK)
    return fail(s, s->db, "releasing claims");
  int rc = exec(s, "BEGIN IMMEDIATE", "releasing claims");
  for (int i = 0; rc == 0 && i < n; i++) {
    sqlite3_bind_int64(st, 1, (sqlite3_int64)l[i].id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)l[i].lease);
    rc = step_done(s, st, "releasing claims");
  }
  sqlite3_finalize(st);
  if (rc == 0)
    rc = exec(s, "COMMIT", "releasing claims");
  if (rc)
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
  return rc;
}

static int sqlite_refused(coda__store *base, coda__lease *out, int max) {
  sqlite_store *s = (sqlite_store *)base;
  int n = s->nrefused < max ? s->nrefused : max;
  if (n > 0)
    memcpy(out, s->refused, (size_t)n * sizeof *out);
  return n;
}

static int sqlite_expire(coda__store *base, int64_t now, int64_t lease_until, int max,
                         coda__claim_fn fn, void *user) {
  sqlite_store *s = (sqlite_store *)base;
  sqlite3_stmt *st = s->st[ST_EXPIRE];
  sqlite3_bind_int64(st, 1, lease_until);
  sqlite3_bind_int64(st, 2, now);
  sqlite3_bind_int(st, 3, max);
  return hand_rows(s, st, fn, user, "taking over expired tasks");
}

static int sqlite_progress_leased(coda__store *base, const coda__lease *l,
                                  double progress) {
  sqlite_store *s = (sqlite_store *)base;
  sqlite3_stmt *st = s->st[ST_PROGRESS_LEASED];
  sqlite3_bind_int64(st, 1, (sqlite3_int64)l->id);
  sqlite3_bind_double(st, 2, progress);
  sqlite3_bind_int64(st, 3, (sqlite3_int64)l->lease);
  int rc = step_done(s, st, "recording progress");
  if (rc == 0 && sqlite3_changes(s->db) == 0)
    refuse(s, l->id, l->lease);
  return rc;
}

static int sqlite_paused(coda__store *base, char *buf, size_t cap) {
  sqlite_store *s = (sqlite_store *)base;
  sqlite3_stmt *st = s->st[ST_PAUSED];
  size_t len = 0;
  int n = 0, rc, out = 0;
  if (cap)
    buf[0] = '\0';
  while ((rc = sqlite3_step(st)) == SQLITE_ROW && out == 0) {
    const char *name = (const char *)sqlite3_column_text(st, 0);
    int w = snprintf(buf + len, cap - len, "%s%s", n ? "," : "", name ? name : "");
    if (w < 0 || (size_t)w >= cap - len)
      out = CODA_ELIMIT;
    else
      len += (size_t)w, n++;
  }
  if (out == 0 && rc != SQLITE_DONE)
    out = fail(s, s->db, "reading paused queues");
  sqlite3_reset(st);
  return out ? out : n;
}

/* ---- version 3 ------------------------------------------------------------ */

/* An action that changed nothing: was the task there at all? */
static int unchanged(sqlite_store *s, uint64_t id) {
  sqlite3_stmt *st = s->st[ST_EXISTS];
  sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    return fail(s, s->db, "reading a task");
  return rc == SQLITE_ROW ? CODA_ESTATE : CODA_ENOTFOUND;
}

/* Steps an action's statement (its own transaction); how many rows it
 * changed, or < 0. */
static long run_action(sqlite_store *s, sqlite3_stmt *st, const char *what) {
  int rc = step_done(s, st, what);
  sqlite3_clear_bindings(st);
  return rc ? rc : sqlite3_changes(s->db);
}

static int sqlite_retry(coda__store *base, uint64_t id, int64_t now) {
  sqlite_store *s = (sqlite_store *)base;
  sqlite3_stmt *st = s->st[ST_RETRY];
  sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
  sqlite3_bind_int64(st, 2, now);
  long n = run_action(s, st, "retrying a task");
  return n < 0 ? (int)n : n ? 0 : unchanged(s, id);
}

static int sqlite_cancel(coda__store *base, uint64_t id, int64_t now) {
  sqlite_store *s = (sqlite_store *)base;
  sqlite3_stmt *st = s->st[ST_CANCEL];
  sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
  sqlite3_bind_int64(st, 2, now);
  long n = run_action(s, st, "cancelling a task");
  if (n != 0)
    return n < 0 ? (int)n : 0;
  st = s->st[ST_CANCEL_RUNNING];
  sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
  n = run_action(s, st, "cancelling a task");
  return n < 0 ? (int)n : n ? 1 : unchanged(s, id);
}

static int sqlite_remove(coda__store *base, uint64_t id) {
  sqlite_store *s = (sqlite_store *)base;
  sqlite3_stmt *st = s->st[ST_REMOVE];
  sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
  long n = run_action(s, st, "deleting a task");
  return n < 0 ? (int)n : n ? 0 : unchanged(s, id);
}

#ifndef BULK_ROWS
#define BULK_ROWS 500 /* tasks per transaction of a bulk action; smaller: tests */
#endif

/* A bulk action, BULK_ROWS tasks per transaction in order of id, each
 * transaction a turn at the write lock like a batch: a renewal waiting
 * goes between two (one statement over every dead task of a large store
 * held the lock for seconds, and leases lapsed behind it). What committed
 * stays when a later transaction fails; the error says how many. */
static long bulk(sqlite_store *s, int which, coda_task_state state, const char *queue,
                 int64_t now, const char *what) {
  sqlite3_stmt *st = s->st[which];
  long total = 0;
  int64_t last = 0;
  for (;;) {
    int rc = sqlite_begin(&s->base); /* refused while not back at FULL */
    long n = 0;
    if (rc == 0) {
      sqlite3_bind_int(st, 1, (int)state);
      sqlite3_bind_int64(st, 2, now);
      bind_text_or_null(st, 3, queue);
      sqlite3_bind_int64(st, 4, last);
      sqlite3_bind_int(st, 5, BULK_ROWS);
      int step;
      while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 0);
        last = id > last ? id : last;
        n++;
      }
      sqlite3_reset(st);
      sqlite3_clear_bindings(st);
      rc = step == SQLITE_DONE ? 0 : fail(s, s->db, what);
      rc = rc ? rc : step_done(s, s->st[ST_COMMIT], what);
      if (rc)
        sqlite_rollback(&s->base);
      else
        end_turn(s);
    }
    if (rc) {
      if (total > 0) {
        char why[sizeof s->err];
        snprintf(why, sizeof why, "%s", s->err);
        snprintf(s->err, sizeof s->err, "%.400s (%ld tasks had been changed before)", why,
                 total);
      }
      return rc;
    }
    total += n;
    if (n < BULK_ROWS)
      return total;
  }
}

static long sqlite_retry_all(coda__store *base, coda_task_state state, const char *queue,
                             int64_t now) {
  return bulk((sqlite_store *)base, ST_RETRY_ALL, state, queue, now, "retrying tasks");
}

static long sqlite_remove_all(coda__store *base, coda_task_state state,
                              const char *queue) {
  return bulk((sqlite_store *)base, ST_REMOVE_ALL, state, queue, 0, "deleting tasks");
}

typedef struct queue_rows {
  coda_queue_info *q;
  int n, cap;
} queue_rows;

static coda_queue_info *queue_row(queue_rows *l, const char *name) {
  for (int i = 0; i < l->n; i++)
    if (strcmp(l->q[i].name, name) == 0)
      return &l->q[i];
  if (l->n == l->cap) {
    int cap = l->cap ? l->cap * 2 : 8;
    coda_queue_info *grown = realloc(l->q, (size_t)cap * sizeof *grown);
    if (!grown)
      return NULL;
    l->q = grown;
    l->cap = cap;
  }
  char *copy = strdup(name);
  if (!copy)
    return NULL;
  l->q[l->n] = (coda_queue_info){.name = copy};
  return &l->q[l->n++];
}

static int by_queue_name(const void *a, const void *b) {
  return strcmp(((const coda_queue_info *)a)->name, ((const coda_queue_info *)b)->name);
}

/* Two reads on rdb: the queues' table, and the counts by queue and state
 * (the coda_tasks_queue_state index, not the rows). */
static int read_queue_stats(sqlite_store *s, int64_t now, queue_rows *l) {
  sqlite3_stmt *st = s->stats_queues;
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    coda_queue_info *q = queue_row(l, (const char *)sqlite3_column_text(st, 0));
    if (!q)
      break;
    q->paused = sqlite3_column_int(st, 1);
    q->processed = (long)sqlite3_column_int64(st, 2);
    q->failed = (long)sqlite3_column_int64(st, 3);
  }
  sqlite3_reset(st);
  if (rc != SQLITE_DONE)
    return rc == SQLITE_ROW ? CODA_ENOMEM : fail(s, s->rdb, "reading the queues");
  st = s->stats_counts;
  sqlite3_bind_int64(st, 1, now);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    coda_queue_info *q = queue_row(l, (const char *)sqlite3_column_text(st, 0));
    int state = sqlite3_column_int(st, 1);
    if (!q)
      break;
    if (state >= 0 && state <= CODA_STATE_CANCELLED)
      q->counts[state] += (long)sqlite3_column_int64(st, 2);
    q->scheduled += (long)sqlite3_column_int64(st, 3);
    int64_t oldest = sqlite3_column_int64(st, 4); /* NULL reads as 0 */
    if (oldest && (!q->oldest_due_at || oldest < q->oldest_due_at))
      q->oldest_due_at = oldest;
  }
  sqlite3_reset(st);
  if (rc != SQLITE_DONE)
    return rc == SQLITE_ROW ? CODA_ENOMEM : fail(s, s->rdb, "counting the tasks");
  return 0;
}

static int sqlite_queue_stats(coda__store *base, int64_t now, coda__queue_fn fn,
                              void *user) {
  sqlite_store *s = (sqlite_store *)base;
  queue_rows l = {0};
  uv_mutex_lock(&s->read_mu);
  int rc = read_queue_stats(s, now, &l);
  uv_mutex_unlock(&s->read_mu);
  if (rc == 0 && l.n > 1)
    qsort(l.q, (size_t)l.n, sizeof *l.q, by_queue_name);
  int given = 0, stop = 0;
  for (int i = 0; i < l.n; i++) {
    if (rc == 0 && !stop) {
      given++;
      stop = fn(&l.q[i], user);
    }
    free((char *)l.q[i].name);
  }
  free(l.q);
  return rc ? rc : given;
}

static int sqlite_node_beat(coda__store *base, const coda_node_info *n, int64_t now,
                            int64_t ttl_ms) {
  sqlite_store *s = (sqlite_store *)base;
  uv_mutex_lock(&s->node_mu);
  int rc = coda__node_table_beat(&s->nodes, n, now, ttl_ms);
  uv_mutex_unlock(&s->node_mu);
  return rc;
}

static int sqlite_nodes(coda__store *base, int64_t now, coda__node_fn fn, void *user) {
  sqlite_store *s = (sqlite_store *)base;
  coda__node_list l = {0};
  uv_mutex_lock(&s->node_mu);
  int rc = coda__node_table_collect(&s->nodes, now, &l);
  uv_mutex_unlock(&s->node_mu);
  return rc ? rc : coda__node_list_deliver(&l, fn, user);
}

static const coda__store_methods sqlite_methods = {
    .version = CODA__STORE_VERSION,
    .name = "sqlite",
    .recover = sqlite_recover,
    .begin = sqlite_begin,
    .commit = sqlite_commit,
    .rollback = sqlite_rollback,
    .enqueue = sqlite_enqueue,
    .claim = sqlite_claim,
    .finish = sqlite_finish,
    .progress = sqlite_progress,
    .reserve_ids = sqlite_reserve_ids,
    .get = sqlite_get,
    .next_due = sqlite_next_due,
    .errmsg = sqlite_errmsg,
    .close = sqlite_close,
    .begin_lazy = sqlite_begin_lazy,
    .list = sqlite_list,
    .purge = sqlite_purge,
    .find = sqlite_find,
    .serve = sqlite_serve,
    .pause = sqlite_pause,
    .renew = sqlite_renew,
    .refused = sqlite_refused,
    .expire = sqlite_expire,
    .progress_leased = sqlite_progress_leased,
    .paused = sqlite_paused,
    .release = sqlite_release,
    .retry = sqlite_retry,
    .cancel = sqlite_cancel,
    .remove = sqlite_remove,
    .retry_all = sqlite_retry_all,
    .remove_all = sqlite_remove_all,
    .queue_stats = sqlite_queue_stats,
    .node_beat = sqlite_node_beat,
    .nodes = sqlite_nodes,
};
