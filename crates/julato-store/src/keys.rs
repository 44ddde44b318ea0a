//! Byte layouts of the store's keys. Big-endian numbers keep key order equal to
//! numeric order; a zero byte separates names, which never contain one.

use julato_core::{EventTime, FunctionName, FunctionVersion, Origin, ProcessKey, Seq, Version};

pub fn seq(seq: Seq) -> [u8; 8] {
    seq.0.to_be_bytes()
}

pub fn decode_seq(bytes: &[u8]) -> Option<Seq> {
    Some(Seq(u64::from_be_bytes(bytes.try_into().ok()?)))
}

/// An emitted event's identity: the emitting seq, then its index among the emits.
pub fn origin(origin: Origin) -> [u8; 12] {
    let mut key = [0; 12];
    key[..8].copy_from_slice(&origin.seq.0.to_be_bytes());
    key[8..].copy_from_slice(&origin.index.to_be_bytes());
    key
}

/// One edge of the causal graph, keyed by its cause so effects scan in order.
pub fn edge(cause: Seq, effect: Seq) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&cause.0.to_be_bytes());
    key[8..].copy_from_slice(&effect.0.to_be_bytes());
    key
}

pub fn decode_edge(bytes: &[u8]) -> Option<(Seq, Seq)> {
    let cause = decode_seq(bytes.get(..8)?)?;
    let effect = decode_seq(bytes.get(8..16)?)?;
    Some((cause, effect))
}

pub fn function_prefix(function: &FunctionName) -> Vec<u8> {
    let mut key = Vec::with_capacity(function.as_str().len() + 1);
    key.extend_from_slice(function.as_str().as_bytes());
    key.push(0);
    key
}

pub fn process(function: &FunctionName, process: &ProcessKey) -> Vec<u8> {
    let mut key = function_prefix(function);
    key.extend_from_slice(process.as_str().as_bytes());
    key
}

pub fn version(function: &FunctionName, process_key: &ProcessKey, version: Version) -> Vec<u8> {
    let mut key = process(function, process_key);
    key.push(0);
    key.extend_from_slice(&version.0.to_be_bytes());
    key
}

/// The value of a version entry: the seq and time of the event that made it.
pub fn position(seq: Seq, time: EventTime) -> [u8; 16] {
    let mut value = [0; 16];
    value[..8].copy_from_slice(&seq.0.to_be_bytes());
    value[8..].copy_from_slice(&time.0.to_be_bytes());
    value
}

pub fn decode_position(bytes: &[u8]) -> Option<(Seq, EventTime)> {
    let seq = decode_seq(bytes.get(..8)?)?;
    let time = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some((seq, EventTime(time)))
}

/// A version entry moved off the live timeline by restore `branch`.
pub fn archived(branch: u64, function: &FunctionName, key: &ProcessKey, v: Version) -> Vec<u8> {
    let mut out = branch.to_be_bytes().to_vec();
    out.extend_from_slice(&version(function, key, v));
    out
}

pub fn idempotency(function: &FunctionName, process_key: &ProcessKey, token: &str) -> Vec<u8> {
    let mut key = process(function, process_key);
    key.push(0);
    key.extend_from_slice(token.as_bytes());
    key
}

pub fn component(function: &FunctionName, version: FunctionVersion) -> Vec<u8> {
    let mut key = function_prefix(function);
    key.extend_from_slice(&version.0.to_be_bytes());
    key
}
