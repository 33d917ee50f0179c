/*
 * bench_util.h - the clock and sleep the benchmark programs share.
 */
#ifndef CODA_BENCH_UTIL_H
#define CODA_BENCH_UTIL_H

#include <errno.h>
#include <stdint.h>
#include <time.h>

/* Monotonic time in ns. */
static inline uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Sleeps us microseconds, through signals. */
static inline void sleep_us(long us) {
  struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

#endif /* CODA_BENCH_UTIL_H */
