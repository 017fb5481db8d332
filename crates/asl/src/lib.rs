//! `trellis-asl`: a pure, deterministic Amazon States Language interpreter.
//!
//! * [`validate`] parses and validates definitions into a [`StateMachine`].
//! * [`Execution`] holds one execution's state; [`Execution::step`] takes one [`Input`]
//!   (start, task result, timer fired, stop ...) and returns the AWS history events it
//!   produced and the [`Command`]s the host must carry out (invoke a task, start a timer,
//!   finish). Time, randomness and task tokens come from an injected [`Env`].
//!
//! Nothing in this crate performs I/O, spawns threads or reads a clock.

pub mod choice;
pub mod definition;
pub mod driver;
pub mod env;
pub mod error;
pub mod exec;
pub mod export;
pub mod history;
pub mod intrinsics;
pub mod items;
pub mod json;
pub mod jsonata;
pub mod path;
pub mod sharding;
pub mod template;
pub mod validate;

pub use definition::StateMachine;
pub use env::{Entropy, Env, ManualEnv};
pub use error::{Error, Failure, Result};
pub use exec::{Command, ExecStatus, Execution, ExecutionInfo, Input, Limits, Outcome, StepOutput};
pub use history::{EventType, HistoryEvent};
pub use sharding::{Placement, Sharding};
pub use validate::{parse, Diagnostic, Options, Severity};
