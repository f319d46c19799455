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
#include <sys/eventfd.h>
#include <sys/mman.h>

#include "ring.h"

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: ring_server MEMFD RESP_FD\n");
        return 2;
    }
    int memfd = atoi(argv[1]), resp_fd = atoi(argv[2]);
    volatile uint64_t *words = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (words == MAP_FAILED)
        die("mmap");
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
            store(words, KICKED_AT, now_ns());
            if (eventfd_write(resp_fd, 1) < 0)
                die("kick");
        }
        store(words, REQ_TAIL, tail);
    }
    printf("%llu\n", (unsigned long long)answered);
    return 0;
}
