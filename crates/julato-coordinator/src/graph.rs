//! The causal dependency graph around one event: its causes (what it depends
//! on, transitively) or its effects (what depends on it), to a depth, and
//! consistent reads of several processes at one cut of the log.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use julato_core::{AsOf, CauseKind, EventRecord, ProcessId, Seq, Version};
use serde::Serialize;

use crate::{Coordinator, Error, ProcessState};

/// Most events one graph answer holds; a bigger one is cut and says so.
pub const MAX_NODES: usize = 1_000;

/// Deepest graph one answer walks.
pub const MAX_DEPTH: u32 = 64;

/// Which way to walk from the root event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Towards what the event depends on.
    Causes,
    /// Towards what depends on the event.
    Effects,
}

/// An event of a graph.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub seq: u64,
    pub function: String,
    pub key: String,
    pub version: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub transaction: Option<u64>,
    /// Steps from the root.
    pub depth: u32,
}

/// An edge: `cause` happened before `effect`, which depends on it directly.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Edge {
    pub cause: u64,
    pub effect: u64,
    pub kind: &'static str,
}

/// A subgraph of the causal dependency graph.
#[derive(Debug, Clone, Serialize)]
pub struct Graph {
    pub root: u64,
    pub direction: &'static str,
    pub depth: u32,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// Whether the walk stopped at [`MAX_NODES`] before reaching `depth`.
    pub truncated: bool,
}

impl Graph {
    /// The graph in Graphviz DOT.
    pub fn to_dot(&self) -> String {
        // Named after the walk: `digraph causes` or `digraph effects`.
        let mut out =
            format!("digraph {} {{\n  rankdir=LR;\n  node [shape=box];\n", self.direction);
        if self.truncated {
            out.push_str(&format!(
                "  // truncated: the walk stopped at {} events before depth {}\n  \
                 label=\"truncated at {} events\";\n",
                self.nodes.len(),
                self.depth,
                self.nodes.len()
            ));
        }
        for node in &self.nodes {
            let label = format!(
                "#{} {}/{} v{}\\n{}",
                node.seq,
                dot_escape(&node.function),
                dot_escape(&node.key),
                node.version,
                dot_escape(&node.event_type)
            );
            let style = if node.seq == self.root { ", style=bold" } else { "" };
            out.push_str(&format!("  e{} [label=\"{label}\"{style}];\n", node.seq));
        }
        for edge in &self.edges {
            out.push_str(&format!(
                "  e{} -> e{} [label=\"{}\"];\n",
                edge.cause, edge.effect, edge.kind
            ));
        }
        out.push_str("}\n");
        out
    }
}

fn dot_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c if c.is_control() => vec!['?'],
            c => vec![c],
        })
        .collect()
}

/// States of several processes at one cut of the log.
#[derive(Debug, Clone)]
pub struct Cut {
    /// Every event at or before this seq is reflected, none after.
    pub seq: Seq,
    /// One per process asked, in the order asked; version 0 for a process
    /// without events at the cut.
    pub states: Vec<ProcessState>,
}

impl Coordinator {
    /// The causes or effects of event `root`, `depth` steps out.
    ///
    /// # Errors
    /// [`Error::UnknownEvent`] when no committed event has that seq.
    pub fn graph(&self, root: Seq, direction: Direction, depth: u32) -> Result<Graph, Error> {
        let depth = depth.min(MAX_DEPTH);
        let (first, _) = self.event(root)?;
        let upto = self.managers.sequencer().watermark();
        let mut nodes: BTreeMap<u64, Node> = BTreeMap::new();
        let mut edges: BTreeSet<Edge> = BTreeSet::new();
        let mut queue = VecDeque::from([(first, 0u32)]);
        let mut truncated = false;
        nodes.insert(root.0, node(&queue[0].0, 0));
        while let Some((record, at)) = queue.pop_front() {
            if at >= depth {
                continue;
            }
            let next: Vec<(EventRecord, CauseKind)> = match direction {
                Direction::Causes => {
                    let mut out = Vec::new();
                    for cause in &record.causes {
                        if let Some(found) = self.store.event(cause.seq)? {
                            out.push((found, cause.kind));
                        }
                    }
                    out
                }
                Direction::Effects => {
                    let mut out = Vec::new();
                    for seq in self.store.effects(record.seq, MAX_NODES)? {
                        if seq > upto {
                            continue;
                        }
                        if let Some(found) = self.store.event(seq)? {
                            let kind = found
                                .causes
                                .iter()
                                .find(|c| c.seq == record.seq)
                                .map_or(CauseKind::Process, |c| c.kind);
                            out.push((found, kind));
                        }
                    }
                    out
                }
            };
            for (other, kind) in next {
                let (cause, effect) = match direction {
                    Direction::Causes => (other.seq.0, record.seq.0),
                    Direction::Effects => (record.seq.0, other.seq.0),
                };
                if !nodes.contains_key(&other.seq.0) {
                    if nodes.len() >= MAX_NODES {
                        truncated = true;
                        continue;
                    }
                    nodes.insert(other.seq.0, node(&other, at + 1));
                    queue.push_back((other, at + 1));
                }
                edges.insert(Edge { cause, effect, kind: kind.as_str() });
            }
        }
        Ok(Graph {
            root: root.0,
            direction: match direction {
                Direction::Causes => "causes",
                Direction::Effects => "effects",
            },
            depth,
            nodes: nodes.into_values().collect(),
            edges: edges.into_iter().collect(),
            truncated,
        })
    }

    /// The states of several processes at one cut: the committed watermark.
    /// Everything at or before it is committed, and a transaction's events
    /// are committed together, so the cut never shows part of a transaction;
    /// an effect always has a higher seq than its causes, so it never shows
    /// an effect without its cause. Runs handlers when a process must be
    /// rebuilt; call it off the async executor.
    ///
    /// # Errors
    /// [`Error::UnknownFunction`], or a failure to rebuild a process.
    pub fn read_cut(&self, processes: &[ProcessId]) -> Result<Cut, Error> {
        // Recursive: the reads below take it again, and a plain read would
        // wait behind a restore queued in between (a deadlock).
        let _timeline = self.timeline.read_recursive();
        let cut = self.managers.sequencer().watermark();
        let mut states = Vec::with_capacity(processes.len());
        for process in processes {
            self.function(&process.function)?;
            let resident = self.managers.resident(process);
            let read = match resident {
                Some((head, state)) if head.last_seq <= cut => {
                    ProcessState { newest: head.version, head, state }
                }
                _ => match self.store.head(process)? {
                    None => self.initial_read(process)?,
                    // By version, not "now": the process may move on meanwhile.
                    Some(head) if head.last_seq <= cut => {
                        self.state_at(process, AsOf::Version(head.version))?
                    }
                    Some(_) => match self.state_at(process, AsOf::Seq(cut)) {
                        Ok(read) => read,
                        Err(Error::UnknownProcess(_)) => self.initial_read(process)?,
                        Err(e) => return Err(e),
                    },
                },
            };
            states.push(read);
        }
        Ok(Cut { seq: cut, states })
    }

    fn initial_read(&self, process: &ProcessId) -> Result<ProcessState, Error> {
        let function_version = self
            .catalog
            .latest(&process.function)
            .ok_or_else(|| Error::UnknownFunction(process.function.clone()))?;
        Ok(ProcessState {
            head: julato_core::ProcessHead {
                version: Version(0),
                last_seq: Seq(0),
                function_version,
                created: julato_core::EventTime(0),
                updated: julato_core::EventTime(0),
            },
            state: self.initial_state(process)?,
            newest: Version(0),
        })
    }
}

fn node(record: &EventRecord, depth: u32) -> Node {
    Node {
        seq: record.seq.0,
        function: record.function.as_str().to_owned(),
        key: record.key.as_str().to_owned(),
        version: record.version.0,
        event_type: record.event_type.clone(),
        transaction: record.transaction.map(|t| t.0),
        depth,
    }
}

#[cfg(test)]
mod tests {
    use super::{Edge, Graph, Node};

    fn graph(direction: &'static str, truncated: bool) -> Graph {
        let node = |seq: u64, key: &str| Node {
            seq,
            function: "airports".to_owned(),
            key: key.to_owned(),
            version: 1,
            event_type: "Departure \"x\"".to_owned(),
            transaction: None,
            depth: 0,
        };
        Graph {
            root: 1,
            direction,
            depth: 2,
            nodes: vec![node(1, "EWR"), node(2, "I\\AH")],
            edges: vec![Edge { cause: 1, effect: 2, kind: "emit" }],
            truncated,
        }
    }

    #[test]
    fn dot_is_named_after_its_direction_and_escapes_labels() {
        let dot = graph("effects", false).to_dot();
        assert!(dot.starts_with("digraph effects {\n"), "{dot}");
        assert!(dot.contains(r##"e2 [label="#2 airports/I\\AH v1\nDeparture \"x\""];"##), "{dot}");
        assert!(dot.contains("e1 -> e2 [label=\"emit\"];"), "{dot}");
        assert!(!dot.contains("truncated"), "{dot}");
        assert!(graph("causes", false).to_dot().starts_with("digraph causes {\n"));
    }

    #[test]
    fn a_truncated_walk_says_so_in_dot() {
        let dot = graph("causes", true).to_dot();
        assert!(dot.contains("label=\"truncated at 2 events\";"), "{dot}");
        assert!(dot.ends_with("}\n"), "{dot}");
    }
}
