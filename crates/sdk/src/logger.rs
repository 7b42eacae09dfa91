//! The `log` bridge: `log` records become host log records, correlated with
//! the current span (the `tracing` span, else the OpenTelemetry context's),
//! recorded through the pipe. They are not added to spans as events. Key-values
//! become attributes, typed as `opentelemetry-appender-log` types them.

use std::fmt::Write as _;

use opentelemetry::Value;

use crate::layer::implicit_parent;
use crate::pipe;

pub(crate) struct Logger {
    pub(crate) targets: Option<tracing_subscriber::filter::Targets>,
}

fn level(level: log::Level) -> tracing_core::Level {
    match level {
        log::Level::Error => tracing_core::Level::ERROR,
        log::Level::Warn => tracing_core::Level::WARN,
        log::Level::Info => tracing_core::Level::INFO,
        log::Level::Debug => tracing_core::Level::DEBUG,
        log::Level::Trace => tracing_core::Level::TRACE,
    }
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        let tracing_level = level(metadata.level());
        self.targets
            .as_ref()
            .is_none_or(|t| t.would_enable(metadata.target(), &tracing_level))
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut owned = String::new();
        let message = match record.args().as_str() {
            Some(s) => s,
            None => {
                let _ = write!(owned, "{}", record.args());
                &owned
            }
        };
        let mut pairs = KeyValues(None);
        let _ = record.key_values().visit(&mut pairs);
        let span = implicit_parent();
        pipe::log(pipe::Log {
            time: None,
            severity: pipe::severity(&level(record.level())),
            target: record.target(),
            body: (!message.is_empty()).then_some(message),
            span: span.as_ref(),
            attributes: &[],
            encoded: pairs.0.as_ref(),
        });
        // A huge record's buffer is not kept.
        if let Some(pairs) = pairs.0 {
            let buffer = pairs.into_buffer();
            if buffer.capacity() <= 4096 {
                KEY_VALUES.with(|b| b.set(buffer));
            }
        }
    }

    fn flush(&self) {
        pipe::flush();
    }
}

crate::local::local! {
    /// The buffer a record's key-values are encoded into, kept from one
    /// record to the next.
    static KEY_VALUES: std::cell::Cell<Vec<u8>> = std::cell::Cell::new(Vec::new());
}

/// A record's key-values, encoded as attributes as they are visited (no
/// `KeyValue`, no copy of the text): integers that fit an `i64`, floats,
/// booleans and strings keep their type; anything else becomes its text.
/// The buffer is taken at the first pair, so a record without any pays
/// nothing for it.
struct KeyValues(Option<pipe::Pairs>);

/// One value, under its key.
struct One<'p, 'k> {
    pairs: &'p mut pipe::Pairs,
    key: &'k str,
}

impl log::kv::VisitValue<'_> for One<'_, '_> {
    fn visit_any(&mut self, value: log::kv::Value<'_>) -> Result<(), log::kv::Error> {
        self.pairs.push_str(self.key, &value.to_string());
        Ok(())
    }
    fn visit_bool(&mut self, value: bool) -> Result<(), log::kv::Error> {
        self.pairs.push(self.key, &Value::Bool(value));
        Ok(())
    }
    fn visit_str(&mut self, value: &str) -> Result<(), log::kv::Error> {
        self.pairs.push_str(self.key, value);
        Ok(())
    }
    fn visit_i64(&mut self, value: i64) -> Result<(), log::kv::Error> {
        self.pairs.push(self.key, &Value::I64(value));
        Ok(())
    }
    fn visit_u64(&mut self, value: u64) -> Result<(), log::kv::Error> {
        match i64::try_from(value) {
            Ok(v) => self.visit_i64(v),
            Err(_) => self.visit_any(log::kv::Value::from(value)),
        }
    }
    fn visit_i128(&mut self, value: i128) -> Result<(), log::kv::Error> {
        match i64::try_from(value) {
            Ok(v) => self.visit_i64(v),
            Err(_) => self.visit_any(log::kv::Value::from(value)),
        }
    }
    fn visit_u128(&mut self, value: u128) -> Result<(), log::kv::Error> {
        match i64::try_from(value) {
            Ok(v) => self.visit_i64(v),
            Err(_) => self.visit_any(log::kv::Value::from(value)),
        }
    }
    fn visit_f64(&mut self, value: f64) -> Result<(), log::kv::Error> {
        self.pairs.push(self.key, &Value::F64(value));
        Ok(())
    }
}

impl<'kvs> log::kv::VisitSource<'kvs> for KeyValues {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        let pairs = self
            .0
            .get_or_insert_with(|| pipe::Pairs::with_buffer(KEY_VALUES.with(|b| b.take())));
        value.visit(&mut One {
            pairs,
            key: key.as_str(),
        })
    }
}
