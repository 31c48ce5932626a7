/* send_zc.c - does IORING_OP_SEND_ZC pay, and above what payload size?
 *
 * Why it exists: zero-copy sends save the copy into the socket buffer but
 * cost page pinning and a second completion (the notification that the pages
 * may be reused); whether that pays depends on the payload size and on the
 * path the packets take.  This program sends the same payloads with SEND and
 * with SEND_ZC over a loopback TCP connection, a few in flight, and prints
 * throughput, the sender's CPU time per MiB, and whether the kernel reported
 * that it copied after all (IORING_SEND_ZC_REPORT_USAGE).
 *
 *   build/bench/send_zc [total MiB per size, default 512]
 *
 * Loopback (and veth) deliver to a local socket, where the kernel must copy
 * zero-copy pages anyway: expect no gain here; run it over a real NIC to find
 * a host's threshold. */
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IORING_SEND_ZC_REPORT_USAGE
#define IORING_SEND_ZC_REPORT_USAGE (1U << 3)
#endif
#ifndef IORING_NOTIF_USAGE_ZC_COPIED
#define IORING_NOTIF_USAGE_ZC_COPIED (1U << 31)
#endif

#define INFLIGHT 4

struct sink {
    int fd;
    size_t total;
};

static double zc_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double zc_thread_cpu(void)
{
    struct rusage ru;

    getrusage(RUSAGE_THREAD, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void *zc_sink_main(void *arg)
{
    struct sink *s = arg;
    size_t got = 0;
    char *buf = malloc(1 << 20);

    while (buf && got < s->total) {
        ssize_t n = recv(s->fd, buf, 1 << 20, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    free(buf);
    return NULL;
}

static int zc_pair(int *tx, int *rx)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int one = 1, l = socket(AF_INET, SOCK_STREAM, 0);

    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 1) < 0 ||
        getsockname(l, (struct sockaddr *)&a, &len) < 0)
        return -errno;
    *tx = socket(AF_INET, SOCK_STREAM, 0);
    if (*tx < 0 || connect(*tx, (struct sockaddr *)&a, sizeof(a)) < 0)
        return -errno;
    *rx = accept(l, NULL, NULL);
    close(l);
    if (*rx < 0)
        return -errno;
    setsockopt(*tx, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return 0;
}

/* Sends `total` bytes in `size` pieces, INFLIGHT at a time; counts the
 * notifications that said the kernel copied. */
static int zc_run(struct io_uring *ring, int fd, char *bufs, size_t size, size_t total,
                  bool zc, unsigned *copied, unsigned *notifs)
{
    size_t sent = 0, queued = 0;
    unsigned pending = 0; /* results and notifications still to come */

    *copied = *notifs = 0;
    while (sent < total || pending) {
        struct io_uring_cqe *cqe;
        while (queued < total && pending < INFLIGHT * (zc ? 2 : 1)) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
            char *b = bufs + ((queued / size) % INFLIGHT) * size;
            if (zc) {
                io_uring_prep_send_zc(sqe, fd, b, size, MSG_WAITALL, IORING_SEND_ZC_REPORT_USAGE);
                pending += 2;
            } else {
                io_uring_prep_send(sqe, fd, b, size, MSG_WAITALL);
                pending++;
            }
            queued += size;
        }
        int r = io_uring_submit_and_wait(ring, 1);
        if (r < 0)
            return r;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(ring, head, cqe) {
            seen++;
            if (cqe->flags & IORING_CQE_F_NOTIF) {
                (*notifs)++;
                if ((uint32_t)cqe->res & IORING_NOTIF_USAGE_ZC_COPIED)
                    (*copied)++;
                pending--;
                continue;
            }
            if (cqe->res < 0)
                return cqe->res;
            sent += (size_t)cqe->res;
            pending--;
            if (zc && !(cqe->flags & IORING_CQE_F_MORE))
                pending--; /* no notification follows */
        }
        io_uring_cq_advance(ring, seen);
    }
    return 0;
}

static int zc_measure(size_t size, size_t total, bool zc)
{
    struct io_uring ring;
    struct sink sink = {.total = total};
    pthread_t th;
    int tx = -1, rx = -1, r = 0;
    unsigned copied, notifs;
    char *bufs = aligned_alloc(4096, INFLIGHT * size);
    double t0, c0, wall, cpu;

    if (!bufs || (r = zc_pair(&tx, &rx)) < 0 || (r = io_uring_queue_init(64, &ring, 0)) < 0)
        return r ? r : -ENOMEM;
    memset(bufs, 'x', INFLIGHT * size);
    sink.fd = rx;
    pthread_create(&th, NULL, zc_sink_main, &sink);
    t0 = zc_now();
    c0 = zc_thread_cpu();
    r = zc_run(&ring, tx, bufs, size, total, zc, &copied, &notifs);
    cpu = zc_thread_cpu() - c0;
    wall = zc_now() - t0;
    shutdown(tx, SHUT_WR);
    pthread_join(th, NULL);
    if (r == 0)
        printf("| %7zu | %-7s | %6.2f GB/s | %7.1f us/MiB | %s |\n", size, zc ? "SEND_ZC" : "SEND",
               total / wall / 1e9, cpu * 1e6 / (total / 1048576.0),
               zc ? (notifs ? (copied == notifs ? "all copied" : copied ? "some copied" : "zero-copy")
                            : "no notifications")
                  : "-");
    io_uring_queue_exit(&ring);
    close(tx);
    close(rx);
    free(bufs);
    return r;
}

int main(int argc, char **argv)
{
    static const size_t sizes[] = {1024, 4096, 16384, 65536, 262144, 1048576};
    size_t total = (size_t)(argc > 1 ? atol(argv[1]) : 512) << 20;

    printf("| payload | op | throughput | sender CPU | kernel says |\n|---:|---|---:|---:|---|\n");
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        for (int zc = 0; zc < 2; zc++) {
            int r = zc_measure(sizes[i], total - total % sizes[i], zc);
            if (r < 0) {
                fprintf(stderr, "send_zc: %zu bytes, %s: %s\n", sizes[i], zc ? "SEND_ZC" : "SEND",
                        strerror(-r));
                return 1;
            }
        }
    }
    return 0;
}
