//! `julato-componentize IN.wasm OUT.wasm`: turns a core wasm module into a component.
//!
//! A Julato function is compiled for `wasm32-unknown-unknown` as a `cdylib`. The
//! bindings that `julato-sdk` generates with `wit-bindgen` embed the world the module
//! implements (`julato:function/function`) in a `component-type` custom section; this
//! tool reads that section and wraps the module into a validated component, which is
//! what the Julato host loads. The module must not import anything but the world's
//! own imports (no WASI): the encoder fails otherwise.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use wit_component::ComponentEncoder;

const USAGE: &str = "usage: julato-componentize IN.wasm OUT.wasm";

fn main() -> ExitCode {
    match run(std::env::args_os().skip(1).map(PathBuf::from).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("julato-componentize: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses the arguments and converts the module.
fn run(args: Vec<PathBuf>) -> Result<()> {
    if args.iter().any(|a| a == Path::new("-h") || a == Path::new("--help")) {
        println!("{USAGE}");
        return Ok(());
    }
    let [input, output] = args.as_slice() else {
        bail!("expected two arguments\n{USAGE}");
    };
    let module =
        std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?;
    let component = componentize(&module)
        .with_context(|| format!("cannot componentize {}", input.display()))?;
    std::fs::write(output, &component)
        .with_context(|| format!("cannot write {}", output.display()))?;
    Ok(())
}

/// Encodes `module` (a core module carrying a `component-type` custom section) as a
/// component and validates the result.
///
/// # Errors
///
/// Fails when the module is not valid wasm, carries no world, imports something the
/// world does not provide, or the resulting component does not validate.
fn componentize(module: &[u8]) -> Result<Vec<u8>> {
    ComponentEncoder::default()
        .validate(true)
        .module(module)
        .context("cannot read the module and its component-type section")?
        .encode()
        .context("cannot encode the component")
}
