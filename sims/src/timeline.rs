//! A run's timeline: every `tracing` event, stamped with simulated time and the simulated
//! machine (madsim node) it happened on. Printed, filtered, to explain a failure; written
//! as Chrome Trace Event JSON (one track per node; Perfetto and chrome://tracing load it).
//!
//! Collected only when asked for (`sim run`, `--trace`): a swarm installs no subscriber,
//! so the `tracing` macros in the node cost next to nothing there.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// One line of the timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Simulated time since the run started.
    pub at: Duration,
    pub node: String,
    pub message: String,
}

/// Entries kept at most; a longer run keeps its first ones and counts the rest.
pub const ENTRIES_MAX: usize = 200_000;

/// The collected timeline of one run. Clones share it.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    entries: Arc<Mutex<Vec<Entry>>>,
    dropped: Arc<Mutex<u64>>,
    /// When the run started, in simulated time (set by [`Timeline::start`]).
    started: Arc<std::sync::OnceLock<tokio::time::Instant>>,
}

impl Timeline {
    pub fn entries(&self) -> Vec<Entry> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn dropped(&self) -> u64 {
        *self.dropped.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, entry: Entry) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() < ENTRIES_MAX {
            entries.push(entry);
        } else {
            *self.dropped.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        }
    }

    /// Installs the collector for the current thread (one seed runs on one thread) until
    /// the guard is dropped. Install it before the runtime is built, so that every span
    /// the simulator creates belongs to this subscriber ([`crate::on_fresh_thread_traced`]
    /// does); a span made under no subscriber breaks the next run on this process.
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let layer = Collector {
            timeline: self.clone(),
        };
        tracing::subscriber::set_default(tracing_subscriber::registry().with(layer))
    }

    /// Marks the start of the run, inside the simulation: times count from here.
    pub fn start(&self) {
        let _ = self.started.set(tokio::time::Instant::now());
    }

    /// Entries that mention any of `words`, plus every injected fault, in order.
    pub fn explaining(&self, words: &[String]) -> Vec<Entry> {
        self.entries()
            .into_iter()
            .filter(|e| {
                e.message.starts_with("fault:")
                    || words.iter().any(|w| e.message.contains(w.as_str()))
            })
            .collect()
    }

    /// The timeline as Chrome Trace Event JSON: an instant event per entry, one thread
    /// (track) per simulated node.
    pub fn chrome_trace(&self) -> String {
        let entries = self.entries();
        let mut nodes: Vec<&str> = entries.iter().map(|e| e.node.as_str()).collect();
        nodes.sort_unstable();
        nodes.dedup();
        let track = |node: &str| nodes.binary_search(&node).expect("collected above") + 1;
        let mut events: Vec<serde_json::Value> = nodes
            .iter()
            .map(|node| {
                serde_json::json!({"name": "thread_name", "ph": "M", "pid": 1, "tid": track(node), "args": {"name": node}})
            })
            .collect();
        events.extend(entries.iter().map(|e| {
            serde_json::json!({
                "name": e.message, "ph": "i", "s": "t", "pid": 1,
                "tid": track(&e.node), "ts": e.at.as_micros() as u64,
            })
        }));
        serde_json::to_string(&serde_json::json!({ "traceEvents": events }))
            .expect("JSON serialises")
    }
}

/// The madsim node name, remembered per span.
struct NodeName(String);

struct Collector {
    timeline: Timeline,
}

/// Renders an event's fields as `message key=value …`.
#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
    name: Option<String>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            "name" => self.name = Some(format!("{value:?}").trim_matches('"').to_owned()),
            other => {
                let _ = write!(self.rest, " {other}={value:?}");
            }
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            "name" => self.name = Some(value.to_owned()),
            other => {
                let _ = write!(self.rest, " {other}={value}");
            }
        }
    }
}

impl<S> Layer<S> for Collector
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attributes.metadata().name() != "node" {
            return;
        }
        let mut fields = Fields::default();
        attributes.record(&mut fields);
        if let (Some(name), Some(span)) = (fields.name, ctx.span(id)) {
            // The simulator's own main node is where the harness runs.
            let name = if name == "madsim-main" {
                "harness".to_owned()
            } else {
                name
            };
            span.extensions_mut().insert(NodeName(name));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // The project's own events only; the simulator's internals are not the story.
        if !event.metadata().target().starts_with("evsource") {
            return;
        }
        let node = ctx
            .event_scope(event)
            .and_then(|scope| {
                scope
                    .from_root()
                    .find_map(|span| span.extensions().get::<NodeName>().map(|n| n.0.clone()))
            })
            .unwrap_or_else(|| "harness".to_owned());
        let mut fields = Fields::default();
        event.record(&mut fields);
        let at = self
            .timeline
            .started
            .get()
            .map_or(Duration::ZERO, |started| started.elapsed());
        self.timeline.push(Entry {
            at,
            node,
            message: format!("{}{}", fields.message, fields.rest),
        });
    }
}
