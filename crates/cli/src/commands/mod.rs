//! One module per subcommand.

pub mod instrument;
pub mod logs;
pub mod metrics;
pub mod run;
pub mod serve;
pub mod trace;
pub mod traces;
pub mod ui;
