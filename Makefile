# coda - the two commands a newcomer needs:
#   make run    install what is missing, build, start coda-demo on 127.0.0.1:8000
#   make test   install what is missing, build, run every test (plain, ASan+UBSan, TSan, fuzz)
# Everything else is CMake; this file only strings the steps together.

BUILD      ?= build
JOBS       ?= $(shell nproc)
LISTEN     ?= 127.0.0.1:8000
FUZZ_TIME  ?= 60

.PHONY: all deps build run test test-asan test-tsan fuzz bench bench-tasks bench-durable bench-hotpath bench-metrics bench-redis install clean format

all: build

deps:
	@scripts/deps test

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCODA_WERROR=ON >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

run: build
	./$(BUILD)/coda-demo --listen $(LISTEN)

test: deps
	@scripts/test

test-asan: deps
	@scripts/test asan

fuzz: deps
	@scripts/fuzz $(FUZZ_TIME)

bench: build
	@scripts/deps bench
	@bench/http.sh

bench-tasks: build
	@scripts/deps bench
	@bench/tasks.sh

bench-durable: build
	@scripts/deps bench
	@BUILD=$(BUILD) bench/durable.sh

bench-hotpath: build
	@scripts/deps bench
	@BUILD=$(BUILD) bench/hotpath.sh

bench-metrics: build
	@scripts/deps bench
	@BUILD=$(BUILD) bench/metrics.sh

bench-redis: build
	@scripts/deps bench
	@BUILD=$(BUILD) bench/redis.sh

test-tsan: deps
	@scripts/test tsan

install: build
	cmake --install $(BUILD)

format:
	clang-format -i include/*.h src/*/*.[ch] tests/*.h tests/*/*/*.c tests/*/*.c examples/*/*.c fuzz/*.c

clean:
	rm -rf build build-asan build-tsan build-fuzz
