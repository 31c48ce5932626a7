// bench_publish.cc - what a publish costs its thread, alone and beside
// another publishing thread: the sequencer's locks (src/pubsub_seq.c).
//
// Why it exists: offsets are assigned under a lock; publishers of different
// topics should not wait for each other there (docs/ARCHITECTURE.md,
// "Sequences").  A server of two workers runs in this process;
// ringws_publish of 16-byte binary messages from 1 or 2 threads, each to a
// topic of its own (own_topic) or all to one (same_topic), to topics
// without subscribers and without history (plain: nothing of the table is
// made) or with history=1000 (hist: held in the table and in the history).
// items_per_second is the rate of all threads together (real time).
// Run: build/bench/bench_publish [--benchmark_min_time=1]
#include <benchmark/benchmark.h>

#include <cerrno>
#include <cstdio>
#include <pthread.h>
#include <sched.h>

#include "ringws.h"

static ringws_server *bench_srv;

static void *bench_server_run(void *arg)
{
    ringws_server_run(static_cast<ringws_server *>(arg));
    return nullptr;
}

template <bool History, bool Same> static void BM_Publish(benchmark::State &state)
{
    static const char payload[16] = "0123456789abcde";
    char topic[32];

    std::snprintf(topic, sizeof(topic), "%s.%d", History ? "hist" : "plain",
                  Same ? 0 : static_cast<int>(state.thread_index()));
    for (auto _ : state) {
        int r;
        // A worker's full inbox refuses the publish: wait for it to drain.
        while ((r = ringws_publish(bench_srv, topic, payload, sizeof(payload),
                                   RINGWS_PUBLISH_BINARY)) == -EAGAIN)
            sched_yield();
        if (r != 0) {
            state.SkipWithError("ringws_publish failed");
            break;
        }
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK_TEMPLATE(BM_Publish, false, false)->Name("BM_Publish/plain/own_topic")
    ->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK_TEMPLATE(BM_Publish, false, true)->Name("BM_Publish/plain/same_topic")
    ->Threads(2)->UseRealTime();
BENCHMARK_TEMPLATE(BM_Publish, true, false)->Name("BM_Publish/hist/own_topic")
    ->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK_TEMPLATE(BM_Publish, true, true)->Name("BM_Publish/hist/same_topic")
    ->Threads(2)->UseRealTime();

int main(int argc, char **argv)
{
    ringws_topic_rule rule = {};
    ringws_config cfg;
    pthread_t th;

    rule.pattern = "hist.*";
    rule.history = 1000;
    ringws_config_init(&cfg);
    cfg.port = 0;
    cfg.workers = 2;
    cfg.topic_rules = &rule;
    cfg.n_topic_rules = 1;
    if (ringws_server_create(&cfg, &bench_srv) != 0) {
        std::fprintf(stderr, "bench_publish: the server could not start\n");
        return 1;
    }
    pthread_create(&th, nullptr, bench_server_run, bench_srv);
    benchmark::Initialize(&argc, argv);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    ringws_server_stop(bench_srv);
    pthread_join(th, nullptr);
    ringws_server_destroy(bench_srv);
    return 0;
}
