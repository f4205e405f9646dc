//! A `tracing` layer that keeps every event and span it sees, with every field as
//! text: what the log tests read back.

use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Record};
use tracing::{Event, Id, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// One event or span as the subscriber saw it: its level, its message, and every
/// field as text.
#[derive(Debug, Clone)]
pub struct Seen {
    pub level: Level,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

#[derive(Default)]
struct FieldText {
    message: String,
    fields: Vec<(String, String)>,
}

impl Visit for FieldText {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text.clone();
        }
        self.fields.push((field.name().to_owned(), text));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        }
        self.fields
            .push((field.name().to_owned(), value.to_owned()));
    }
}

#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<Seen>>>);

impl Capture {
    pub fn seen(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }

    fn push(&self, level: Level, text: FieldText) {
        self.0.lock().unwrap().push(Seen {
            level,
            message: text.message,
            fields: text.fields,
        });
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut text = FieldText::default();
        event.record(&mut text);
        self.push(*event.metadata().level(), text);
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        let mut text = FieldText {
            message: format!("span {}", attrs.metadata().name()),
            ..FieldText::default()
        };
        attrs.record(&mut text);
        self.push(*attrs.metadata().level(), text);
    }

    fn on_record(&self, span: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let name = ctx.span(span).map(|s| s.name()).unwrap_or("?");
        let mut text = FieldText {
            message: format!("span {name} recorded"),
            ..FieldText::default()
        };
        values.record(&mut text);
        self.push(Level::TRACE, text);
    }
}

pub fn field<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
    seen.fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

pub fn events<'a>(seen: &'a [Seen], message: &str) -> Vec<&'a Seen> {
    seen.iter().filter(|s| s.message == message).collect()
}
