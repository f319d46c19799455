/*
 * The client process of iothread_latency.py, in C: the protocol and the
 * output of client_round_trips() in _ring.py, without the interpreter's
 * own ~0.4 us per request.  A guest's virtio driver or a DPDK application
 * is compiled code; this client shows what the server costs such a peer.
 *
 *   ring_client MEMFD REQ_FD RESP_FD spin|block N WARM
 *
 * prints the N measured round-trip times (ns, space-separated) on one line,
 * its own part of each (from its start to the request sent) on a second,
 * how many of those requests it kicked on a third, and on a fourth, for each
 * measured request it slept for, its wake-up: from the server's response
 * kick (the clock the server left in KICKED_AT) to epoll_wait returning.
 */
#define _GNU_SOURCE
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ring.h"

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: ring_client MEMFD REQ_FD RESP_FD spin|block N WARM\n");
        return 2;
    }
    int memfd = atoi(argv[1]), req_fd = atoi(argv[2]), resp_fd = atoi(argv[3]);
    int spin = strcmp(argv[4], "spin") == 0;
    long n = atol(argv[5]), warm = atol(argv[6]);
    volatile uint64_t *words = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (words == MAP_FAILED)
        die("mmap");
    uint64_t *rtts = calloc((size_t)n, sizeof(*rtts));
    uint64_t *own = calloc((size_t)n, sizeof(*own));
    int64_t *wakes = calloc((size_t)n, sizeof(*wakes));
    long n_wakes = 0;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event event = {.events = EPOLLIN};
    if (!rtts || !own || !wakes || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, resp_fd, &event) < 0)
        die("setting up");
    store(words, WANT_KICK, spin ? 0 : 1);
    uint64_t head = load(words, REQ_HEAD), resp_tail = load(words, RESP_TAIL);
    long kicks = 0;
    for (long i = -warm; i < n; i++) {
        uint64_t t0 = now_ns();
        store(words, REQ_SLOTS + (int)(head & MASK), (uint64_t)i & 0xFFFF);
        store(words, REQ_HEAD, ++head);
        /* the head store before the NO_KICK load (virtio's full barrier) */
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (!load(words, NO_KICK)) {
            store(words, KICKED, head);
            if (eventfd_write(req_fd, 1) < 0)
                die("kick");
            if (i >= 0)
                kicks++;
        }
        uint64_t sent = now_ns(), woke = 0;
        while (load(words, RESP_HEAD) == resp_tail) {
            if (spin) {
                /* as a driver's cpu_relax(): leave the server's stores room */
                __builtin_ia32_pause();
                continue;
            }
            if (epoll_wait(ep, &event, 1, -1) < 0 && errno != EINTR)
                die("epoll_wait");
            woke = now_ns();
            eventfd_t value;
            if (eventfd_read(resp_fd, &value) < 0 && errno != EAGAIN)
                die("eventfd_read");
        }
        uint64_t t1 = now_ns();
        if (load(words, RESP_SLOTS + (int)(resp_tail & MASK)) != ((uint64_t)i & 0xFFFF)) {
            fprintf(stderr, "ring_client: wrong answer\n");
            return 1;
        }
        store(words, RESP_TAIL, ++resp_tail);
        if (i >= 0) {
            rtts[i] = t1 - t0;
            own[i] = sent - t0;
            if (woke)
                wakes[n_wakes++] = (int64_t)(woke - load(words, KICKED_AT));
        }
    }
    for (long i = 0; i < n; i++)
        printf(i ? " %llu" : "%llu", (unsigned long long)rtts[i]);
    printf("\n");
    for (long i = 0; i < n; i++)
        printf(i ? " %llu" : "%llu", (unsigned long long)own[i]);
    printf("\n%ld\n", kicks);
    for (long i = 0; i < n_wakes; i++)
        printf(i ? " %lld" : "%lld", (long long)wakes[i]);
    printf("\n");
    return 0;
}
