/*
 * A floor for iothread_latency.py: the server half of _ring.py's protocol
 * as a C loop that does nothing but busy-poll the request head.  It never
 * blocks, so it keeps NO_KICK at 1 (the client need not kick), and answers
 * each request as RingServer does, kicking the response eventfd (after
 * noting its clock in KICKED_AT) when the client asked for kicks.  No
 * server on this machine answers faster; the benchmark's "floor" rows set
 * qomhost's loop beside it and beside a Python loop that does only this.
 *
 *   ring_server MEMFD RESP_FD
 *
 * serves until the STOP word is set, then prints how many requests it
 * answered.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>

/* word indexes: the same as _ring.py's */
enum {
    SIZE = 4096,
    REQ_HEAD = 0,
    REQ_TAIL = 8,
    RESP_HEAD = 16,
    WANT_KICK = 32,
    NO_KICK = 40,
    KICKED_AT = 56,
    REQ_SLOTS = 64,
    RESP_SLOTS = 128,
    STOP = 192,
    MASK = 63,
};

static uint64_t load(volatile uint64_t *words, int i)
{
    return __atomic_load_n(&words[i], __ATOMIC_ACQUIRE);
}

static void store(volatile uint64_t *words, int i, uint64_t value)
{
    __atomic_store_n(&words[i], value, __ATOMIC_RELEASE);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: ring_server MEMFD RESP_FD\n");
        return 2;
    }
    int memfd = atoi(argv[1]), resp_fd = atoi(argv[2]);
    volatile uint64_t *words = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (words == MAP_FAILED) {
        fprintf(stderr, "ring_server: mmap: %s\n", strerror(errno));
        return 1;
    }
    uint64_t tail = load(words, REQ_TAIL), resp = load(words, RESP_HEAD), answered = 0;
    store(words, NO_KICK, 1);
    for (;;) {
        uint64_t head = load(words, REQ_HEAD);
        if (head == tail) {
            if (load(words, STOP))
                break;
            __builtin_ia32_pause();
            continue;
        }
        for (; tail != head; tail++, resp++, answered++)
            store(words, RESP_SLOTS + (int)(resp & MASK), load(words, REQ_SLOTS + (int)(tail & MASK)));
        store(words, RESP_HEAD, resp);
        if (load(words, WANT_KICK)) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            store(words, KICKED_AT, (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
            if (eventfd_write(resp_fd, 1) < 0) {
                fprintf(stderr, "ring_server: kick: %s\n", strerror(errno));
                return 1;
            }
        }
        store(words, REQ_TAIL, tail);
    }
    printf("%llu\n", (unsigned long long)answered);
    return 0;
}
