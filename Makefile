# Julato build entry points.

CARGO ?= cargo
WASM_TARGET := wasm32-unknown-unknown
# Example functions (members of the functions/ workspace) built by `make functions`;
# cargo names the module of a crate `a-b` `a_b.wasm`.
FUNCTIONS := counter planes account hostile airports relay bad-init
# The functions workspace builds in its own target dir, so it never waits for the
# root workspace's build lock.
WASM_DIR := target/wasm/$(WASM_TARGET)/release
COMPONENTS_DIR := target/functions
COMPONENTIZE := target/release/julato-componentize

.PHONY: functions run test check bench bench-suite bench-history bench-hostile bench-soak

# Builds every example function into a component: target/functions/<name>.wasm.
functions:
	rustup target add $(WASM_TARGET)
	$(CARGO) build --release -p julato-componentize
	cd functions && $(CARGO) build --release --target $(WASM_TARGET) --target-dir ../target/wasm
	@mkdir -p $(COMPONENTS_DIR)
	@for f in $(FUNCTIONS); do \
		in=$(WASM_DIR)/$$(echo $$f | tr - _).wasm; out=$(COMPONENTS_DIR)/$$f.wasm; \
		if [ ! -f $$out ] || [ $$in -nt $$out ] || [ $(COMPONENTIZE) -nt $$out ]; then \
			echo "$(COMPONENTIZE) $$in $$out"; \
			$(COMPONENTIZE) $$in $$out || exit 1; \
		fi; \
	done

# The main job: server on the embedded store, examples deployed, January's flights fed in.
run:
	scripts/run.sh

# The whole benchmark suite (BENCHMARKS.md): one table, every figure beside a
# baseline from the same run. Installs its peers (NATS, PostgreSQL) if missing,
# with scripts/bench-peers.sh. `make bench` runs it, then the history suite,
# the hostile-guest benchmark and, last, the ten-minute soak.
bench: bench-suite
	target/release/julato-bench history
	target/release/julato-bench hostile
	target/release/julato-bench soak

bench-suite: functions
	$(CARGO) build --release -p julato-cli -p julato-bench
	target/release/julato-bench suite

# Only the long-history benchmarks (a few minutes: builds a 1,000,000-event process).
bench-history: functions
	$(CARGO) build --release -p julato-cli -p julato-bench
	target/release/julato-bench history

# A well-behaved process's latency while hostile guests run, beside it alone (30 s).
bench-hostile: functions
	$(CARGO) build --release -p julato-cli -p julato-bench
	target/release/julato-bench hostile

# Ten minutes at 80% of the measured maximum send rate: latency, errors, memory.
bench-soak: functions
	$(CARGO) build --release -p julato-cli -p julato-bench
	target/release/julato-bench soak

# Formatting, lints and the whole test suite, as CI runs them.
check:
	$(CARGO) fmt --all -- --check
	cd functions && $(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	cd functions && $(CARGO) clippy --release --target $(WASM_TARGET) --target-dir ../target/wasm -- -D warnings

test: functions check
	$(CARGO) test --workspace
	cd functions && $(CARGO) test --target-dir ../target/wasm-host
