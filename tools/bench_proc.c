/* bench_proc.c - reading the server's CPU time and memory, and the kernel's
 * slab, from /proc.
 *
 * Why it exists: a rate alone hides what it cost; the server's CPU seconds
 * per message and bytes per connection are the figures that compare servers
 * fairly, whoever drives them. */
#include "bench.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static int proc_read(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n;

    if (!f)
        return -errno;
    n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    return 0;
}

int proc_cpu_ticks(int pid, uint64_t *ticks)
{
    char path[64], buf[1024], *p;
    unsigned long long ut, st;
    int ret;

    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    if ((ret = proc_read(path, buf, sizeof buf)) < 0)
        return ret;
    /* The command name may hold spaces and parentheses: fields start after
     * the last ')'.  utime and stime are fields 14 and 15. */
    p = strrchr(buf, ')');
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                     &ut, &st) != 2)
        return -EINVAL;
    *ticks = ut + st;
    return 0;
}

double proc_ticks_to_s(uint64_t ticks)
{
    return (double)ticks / (double)sysconf(_SC_CLK_TCK);
}

static int proc_field_kb(const char *path, const char *field, uint64_t *kb)
{
    char buf[8192], key[64];
    const char *p;
    int ret;

    if ((ret = proc_read(path, buf, sizeof buf)) < 0)
        return ret;
    snprintf(key, sizeof key, "\n%s:", field);
    if (!strncmp(buf, key + 1, strlen(key + 1)))
        p = buf + strlen(key + 1);
    else if ((p = strstr(buf, key)))
        p += strlen(key);
    else
        return -ENOENT;
    *kb = strtoull(p, NULL, 10);
    return 0;
}

int proc_rss_kb(int pid, uint64_t *kb)
{
    char path[64];

    if (pid)
        snprintf(path, sizeof path, "/proc/%d/status", pid);
    else
        snprintf(path, sizeof path, "/proc/self/status");
    return proc_field_kb(path, "VmRSS", kb);
}

int proc_server_cpu_ticks(const struct bench_opts *o, uint64_t *ticks)
{
    uint64_t sum = 0, t;
    int ret;

    if (!o->n_server_pids)
        return -ENOENT;
    for (unsigned i = 0; i < o->n_server_pids; i++) {
        if ((ret = proc_cpu_ticks(o->server_pids[i], &t)) < 0)
            return ret;
        sum += t;
    }
    *ticks = sum;
    return 0;
}

int proc_server_rss_kb(const struct bench_opts *o, uint64_t *kb)
{
    uint64_t sum = 0, k;
    int ret;

    if (!o->n_server_pids)
        return -ENOENT;
    for (unsigned i = 0; i < o->n_server_pids; i++) {
        if ((ret = proc_rss_kb(o->server_pids[i], &k)) < 0)
            return ret;
        sum += k;
    }
    *kb = sum;
    return 0;
}

int proc_meminfo_kb(const char *field, uint64_t *kb)
{
    return proc_field_kb("/proc/meminfo", field, kb);
}

double proc_self_cpu_s(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}
