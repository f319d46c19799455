/*
 * What ring_client.c and ring_server.c share: the word indexes of
 * _ring.py's mapping (keep them the same as its constants), the loads and
 * stores, the clock, and how they fail.
 */
#ifndef QOMHOST_BENCH_RING_H
#define QOMHOST_BENCH_RING_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
    SIZE = 4096,
    REQ_HEAD = 0,
    REQ_TAIL = 8,
    RESP_HEAD = 16,
    RESP_TAIL = 24,
    WANT_KICK = 32,
    NO_KICK = 40,
    KICKED = 48,
    KICKED_AT = 56,
    REQ_SLOTS = 64,
    RESP_SLOTS = 128,
    STOP = 192,
    MASK = 63,
};

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t load(volatile uint64_t *words, int i)
{
    return __atomic_load_n(&words[i], __ATOMIC_ACQUIRE);
}

static inline void store(volatile uint64_t *words, int i, uint64_t value)
{
    __atomic_store_n(&words[i], value, __ATOMIC_RELEASE);
}

/* Exit with "PROGRAM: what: the error" (needs _GNU_SOURCE before any include). */
static inline void die(const char *what)
{
    fprintf(stderr, "%s: %s: %s\n", program_invocation_short_name, what, strerror(errno));
    exit(1);
}

#endif
