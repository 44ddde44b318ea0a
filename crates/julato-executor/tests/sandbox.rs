//! The sandbox against real components from `make functions`: each budget holds
//! and is reported with its own rejection, and compiled code is reused from disk.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use julato_core::Payload;
use julato_executor::{Executor, HandlerContext, Limits, Rejection};

fn component(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/functions")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!("cannot read {}: {e}; run `make functions` first", path.display())
    })
}

fn ctx() -> HandlerContext {
    HandlerContext {
        function: "hostile".into(),
        key: "k".into(),
        seq: 7,
        version: 1,
        time_unix_nanos: 1_700_000_000_000_000_000,
        function_version: 1,
    }
}

fn json(text: &str) -> Payload {
    Payload::Json(text.into())
}

fn run(executor: &Executor, event_type: &str, data: &str) -> Result<String, Rejection> {
    let loaded = executor.compile(&component("hostile")).unwrap();
    executor.handle(&loaded, &ctx(), event_type, &json(data), "0").map(|o| o.state)
}

#[test]
fn counter_describes_itself_and_handles_say() {
    let dir = tempfile::tempdir().unwrap();
    let executor = Executor::new(dir.path(), Limits::default()).unwrap();
    let loaded = executor.compile(&component("counter")).unwrap();
    let mut types = executor.event_types(&loaded).unwrap();
    types.sort();
    assert_eq!(types, ["Say", "bytes"]);
    assert_eq!(executor.init(&loaded, "counter", "k").unwrap(), "0");

    let outcome = executor.handle(&loaded, &ctx(), "Say", &json(r#"{"text":"hi"}"#), "4").unwrap();
    assert_eq!(outcome.state, "5");
    assert_eq!(outcome.reply.as_deref(), Some(r#""handle: Say(\"hi\"), state: 5""#));

    let again = executor.handle(&loaded, &ctx(), "Say", &json(r#"{"text":"hi"}"#), "4").unwrap();
    assert_eq!((again.state, again.reply), (outcome.state, outcome.reply));

    let error = executor.handle(&loaded, &ctx(), "Shout", &json("{}"), "4").unwrap_err();
    assert_eq!(error, Rejection::UnsupportedEventType("Shout".into()));
    assert_eq!(error.code(), "unsupported_event_type");
}

#[test]
fn an_endless_loop_runs_out_of_fuel() {
    let dir = tempfile::tempdir().unwrap();
    let executor = Executor::new(dir.path(), Limits::default()).unwrap();
    let error = run(&executor, "Spin", "{}").unwrap_err();
    assert_eq!(error, Rejection::FuelExhausted(Limits::default().fuel));
    assert_eq!(error.code(), "fuel_exhausted");
    assert_eq!(run(&executor, "Fine", "{}").unwrap(), "1");
}

#[test]
fn the_wall_clock_backstops_a_loop_with_unlimited_fuel() {
    let dir = tempfile::tempdir().unwrap();
    let limits =
        Limits { fuel: u64::MAX, wall_time: Duration::from_millis(200), ..Limits::default() };
    let executor = Executor::new(dir.path(), limits).unwrap();
    let started = Instant::now();
    let error = run(&executor, "Spin", "{}").unwrap_err();
    assert_eq!(error, Rejection::Timeout(200));
    assert_eq!(error.code(), "handler_timeout");
    // A correctness bound, not a performance figure: the loop would never end.
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn memory_beyond_the_cap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits { memory_bytes: 32 << 20, ..Limits::default() };
    let executor = Executor::new(dir.path(), limits).unwrap();
    let error = run(&executor, "Grow", r#"{"mib": 100}"#).unwrap_err();
    assert_eq!(error, Rejection::MemoryLimit(32 << 20));
    assert_eq!(error.code(), "memory_limit_exceeded");
    assert_eq!(run(&executor, "Grow", r#"{"mib": 4}"#).unwrap(), "0");
}

#[test]
fn traps_and_stack_overflows_are_rejections() {
    let dir = tempfile::tempdir().unwrap();
    let executor = Executor::new(dir.path(), Limits::default()).unwrap();
    let panic = run(&executor, "Panic", "{}").unwrap_err();
    assert!(
        matches!(&panic, Rejection::Trap(m) if m.contains("hostile guest panics on purpose")),
        "the trap names the panic: {panic:?}"
    );
    // `Recurse` keeps nothing in linear memory, so wasm's call stack runs out
    // before the guest's own stack does.
    let overflow = run(&executor, "Recurse", "{}").unwrap_err();
    assert_eq!(overflow, Rejection::StackOverflow);
    assert_eq!(overflow.code(), "stack_overflow");
    assert_eq!(run(&executor, "Fine", "{}").unwrap(), "1");
}

#[test]
fn oversized_replies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let executor = Executor::new(dir.path(), Limits::default()).unwrap();
    let error = run(&executor, "HugeReply", r#"{"bytes": 1000000}"#).unwrap_err();
    assert_eq!(error.code(), "reply_too_large");
    assert_eq!(run(&executor, "HugeReply", r#"{"bytes": 10}"#).unwrap(), "0");
}

#[test]
fn garbage_is_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let executor = Executor::new(dir.path(), Limits::default()).unwrap();
    let error = executor.compile(b"\0asm not really").err().expect("garbage must not compile");
    assert!(matches!(error, julato_executor::Error::InvalidComponent(_)), "{error:?}");
}

#[test]
fn compiled_code_is_reused_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = component("counter");
    let digest = julato_executor::inspect_digest(&bytes);
    let artifact = dir.path().join(format!("{digest}.cwasm"));

    let first = Executor::new(dir.path(), Limits::default()).unwrap();
    first.compile(&bytes).unwrap();
    let written = std::fs::metadata(&artifact).expect("compiled code on disk").modified().unwrap();
    drop(first);

    let second = Executor::new(dir.path(), Limits::default()).unwrap();
    let loaded = second.compile(&bytes).unwrap();
    assert_eq!(std::fs::metadata(&artifact).unwrap().modified().unwrap(), written);
    assert_eq!(second.init(&loaded, "counter", "k").unwrap(), "0");

    // A corrupt artifact is ignored and replaced, not trusted. It is put in place
    // by rename, as the executor writes its own, because the running executor
    // maps the old file.
    let corrupt = dir.path().join("corrupt.tmp");
    std::fs::write(&corrupt, b"not machine code").unwrap();
    std::fs::rename(&corrupt, &artifact).unwrap();
    let third = Executor::new(dir.path(), Limits::default()).unwrap();
    let loaded = third.compile(&bytes).unwrap();
    assert_eq!(third.init(&loaded, "counter", "k").unwrap(), "0");
    assert_ne!(std::fs::read(&artifact).unwrap(), b"not machine code");
}

#[test]
fn a_core_module_is_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let executor = Executor::new(dir.path(), Limits::default()).unwrap();
    let module = wat::parse_str(r#"(module (func (export "handle")))"#).unwrap();
    let error = executor.compile(&module).err().expect("a core module must not compile");
    assert!(matches!(error, julato_executor::Error::InvalidComponent(_)), "{error:?}");
}

#[test]
fn imports_the_host_does_not_provide_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let executor = Executor::new(dir.path(), Limits::default()).unwrap();
    let evil = wat::parse_str(r#"(component (import "evil:host/steal" (func)))"#).unwrap();
    let error = executor.compile(&evil).err().expect("an unknown import must not link");
    assert!(
        matches!(&error, julato_executor::Error::UnknownImports(names) if names == &["evil:host/steal"]),
        "{error:?}"
    );
    assert!(error.to_string().contains("`evil:host/steal`"), "{error}");

    // WASI beside the world's own `log`: only WASI is named.
    let wasi = wat::parse_str(
        r#"(component
             (import "log" (func (param "level" u8) (param "message" string)))
             (import "wasi:filesystem/types@0.2.0" (instance
               (export "drop-everything" (func)))))"#,
    )
    .unwrap();
    let error = executor.compile(&wasi).err().expect("a WASI import must not link");
    assert!(
        matches!(&error, julato_executor::Error::UnknownImports(names)
            if names == &["wasi:filesystem/types@0.2.0"]),
        "{error:?}"
    );
}

#[test]
fn an_initial_state_that_traps_is_a_rejection() {
    let dir = tempfile::tempdir().unwrap();
    let executor = Executor::new(dir.path(), Limits::default()).unwrap();
    let loaded = executor.compile(&component("bad-init")).unwrap();
    assert_eq!(executor.event_types(&loaded).unwrap(), ["Fine"]);
    let error = executor.init(&loaded, "bad-init", "k").unwrap_err();
    assert!(
        matches!(&error, Rejection::Trap(m) if m.contains("building the initial state")),
        "the trap names the panic: {error:?}"
    );
}

#[test]
fn oversized_states_and_too_many_emits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let executor = Executor::new(dir.path(), Limits::default()).unwrap();
    let error = run(&executor, "HugeState", r#"{"bytes": 2000000}"#).unwrap_err();
    assert_eq!(error.code(), "state_too_large");
    let error = run(&executor, "ManyEmits", r#"{"count": 1000}"#).unwrap_err();
    assert_eq!(error, Rejection::TooManyEmits { count: 1000, limit: 100 });
    assert_eq!(error.code(), "too_many_emits");

    let loaded = executor.compile(&component("hostile")).unwrap();
    let within = executor.handle(&loaded, &ctx(), "ManyEmits", &json(r#"{"count": 3}"#), "0");
    assert_eq!(within.unwrap().emits.len(), 3);
}
