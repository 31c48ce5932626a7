# The two commands of ringws.  `make run` installs what is missing, builds an
# optimised server and starts it; `make test` builds a normal and an
# ASan+UBSan tree and runs every test in both.
BUILD ?= build
PORT ?= 8080
BIND ?= 127.0.0.1
ARGS ?=

.PHONY: run test setup build clean fuzz bench

setup:
	@sh tools/setup.sh

build: setup
	@[ -f $(BUILD)/build.ninja ] || meson setup $(BUILD) --buildtype=release >/dev/null
	@ninja -C $(BUILD)

run: build
	./$(BUILD)/ringws --bind $(BIND) --port $(PORT) $(ARGS)

test: setup
	@sh tools/run-tests.sh

# Protocol micro-benchmarks (Google Benchmark) on a release build; the
# server-against-peer comparison is bench/compare.sh.
bench: setup
	@[ -f build-bench/build.ninja ] || meson setup build-bench --buildtype=release >/dev/null
	@ninja -C build-bench
	./build-bench/bench/bench_proto --benchmark_min_time=0.5

fuzz: setup
	@sh tools/fuzz.sh $${FUZZ_SECONDS:-60}

clean:
	rm -rf build build-test build-asan build-tsan build-fuzz build-bench
