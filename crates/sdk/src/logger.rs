//! The `log` bridge: `log` records become host log records, correlated with
//! the current span (the `tracing` span, else the OpenTelemetry context's),
//! recorded through the pipe. They are not added to spans as events. Key-values
//! become attributes, typed as `opentelemetry-appender-log` types them.

use std::fmt::Write as _;

use opentelemetry::{KeyValue, Value};

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
        let attributes = attributes(record.key_values());
        let span = implicit_parent();
        pipe::log(pipe::Log {
            time: None,
            severity: pipe::severity(&level(record.level())),
            target: record.target(),
            body: (!message.is_empty()).then_some(message),
            span: span.as_ref(),
            attributes: &[&attributes],
        });
    }

    fn flush(&self) {
        pipe::flush();
    }
}

/// A record's key-values as attributes: integers that fit an `i64`, floats,
/// booleans and strings keep their type; anything else becomes its text.
fn attributes(kvs: &dyn log::kv::Source) -> Vec<KeyValue> {
    struct Pairs(Vec<KeyValue>);
    struct One(Option<Value>);

    impl log::kv::VisitValue<'_> for One {
        fn visit_any(&mut self, value: log::kv::Value<'_>) -> Result<(), log::kv::Error> {
            self.0 = Some(Value::String(value.to_string().into()));
            Ok(())
        }
        fn visit_bool(&mut self, value: bool) -> Result<(), log::kv::Error> {
            self.0 = Some(Value::Bool(value));
            Ok(())
        }
        fn visit_str(&mut self, value: &str) -> Result<(), log::kv::Error> {
            self.0 = Some(Value::String(value.to_string().into()));
            Ok(())
        }
        fn visit_i64(&mut self, value: i64) -> Result<(), log::kv::Error> {
            self.0 = Some(Value::I64(value));
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
            self.0 = Some(Value::F64(value));
            Ok(())
        }
    }

    impl<'kvs> log::kv::VisitSource<'kvs> for Pairs {
        fn visit_pair(
            &mut self,
            key: log::kv::Key<'kvs>,
            value: log::kv::Value<'kvs>,
        ) -> Result<(), log::kv::Error> {
            let mut one = One(None);
            value.visit(&mut one)?;
            if let Some(v) = one.0 {
                self.0.push(KeyValue::new(key.as_str().to_string(), v));
            }
            Ok(())
        }
    }

    let mut pairs = Pairs(Vec::new());
    let _ = kvs.visit(&mut pairs);
    pairs.0
}
