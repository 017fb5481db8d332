//! Execution history events in the shape of AWS `GetExecutionHistory` (checklist §6).

use serde_json::{Map, Value};

macro_rules! event_types {
    ($($name:ident),* $(,)?) => {
        /// Every AWS history event type.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventType { $($name),* }

        impl EventType {
            pub const ALL: &'static [EventType] = &[$(EventType::$name),*];

            pub fn as_str(self) -> &'static str {
                match self { $(EventType::$name => stringify!($name)),* }
            }

            pub fn parse(s: &str) -> Option<EventType> {
                match s { $(stringify!($name) => Some(EventType::$name),)* _ => None }
            }
        }

        impl serde::Serialize for EventType {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for EventType {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                EventType::parse(&s)
                    .ok_or_else(|| serde::de::Error::custom(format!("unknown event type '{s}'")))
            }
        }
    };
}

event_types!(
    ActivityFailed,
    ActivityScheduled,
    ActivityScheduleFailed,
    ActivityStarted,
    ActivitySucceeded,
    ActivityTimedOut,
    ChoiceStateEntered,
    ChoiceStateExited,
    ExecutionAborted,
    ExecutionFailed,
    ExecutionStarted,
    ExecutionSucceeded,
    ExecutionTimedOut,
    ExecutionRedriven,
    FailStateEntered,
    LambdaFunctionFailed,
    LambdaFunctionScheduled,
    LambdaFunctionScheduleFailed,
    LambdaFunctionStarted,
    LambdaFunctionStartFailed,
    LambdaFunctionSucceeded,
    LambdaFunctionTimedOut,
    MapIterationAborted,
    MapIterationFailed,
    MapIterationStarted,
    MapIterationSucceeded,
    MapStateAborted,
    MapStateEntered,
    MapStateExited,
    MapStateFailed,
    MapStateStarted,
    MapStateSucceeded,
    MapRunAborted,
    MapRunFailed,
    MapRunStarted,
    MapRunSucceeded,
    MapRunRedriven,
    ParallelStateAborted,
    ParallelStateEntered,
    ParallelStateExited,
    ParallelStateFailed,
    ParallelStateStarted,
    ParallelStateSucceeded,
    PassStateEntered,
    PassStateExited,
    SucceedStateEntered,
    SucceedStateExited,
    TaskFailed,
    TaskScheduled,
    TaskStarted,
    TaskStartFailed,
    TaskStateAborted,
    TaskStateEntered,
    TaskStateExited,
    TaskSubmitFailed,
    TaskSubmitted,
    TaskSucceeded,
    TaskTimedOut,
    WaitStateAborted,
    WaitStateEntered,
    WaitStateExited,
    ChoiceStateAborted,
    PassStateAborted,
    EvaluationFailed,
);

impl EventType {
    /// The key that holds this event's details in AWS's JSON (`stateEnteredEventDetails` ...),
    /// or `None` for types that carry none.
    pub fn details_key(self) -> Option<String> {
        let s = self.as_str();
        if s.ends_with("StateEntered") {
            return Some("stateEnteredEventDetails".into());
        }
        if s.ends_with("StateExited") {
            return Some("stateExitedEventDetails".into());
        }
        if s.ends_with("StateAborted")
            || s.starts_with("ParallelState")
            || matches!(
                self,
                EventType::MapStateSucceeded
                    | EventType::MapStateFailed
                    | EventType::MapRunSucceeded
                    | EventType::MapRunAborted
            )
        {
            return None;
        }
        let mut out = String::with_capacity(s.len() + 12);
        let mut chars = s.chars();
        if let Some(c) = chars.next() {
            out.push(c.to_ascii_lowercase());
        }
        out.extend(chars);
        out.push_str("EventDetails");
        Some(out)
    }

    /// `{Type}StateEntered` for a state type name.
    pub fn entered(state_type: &str) -> EventType {
        match state_type {
            "Task" => EventType::TaskStateEntered,
            "Choice" => EventType::ChoiceStateEntered,
            "Wait" => EventType::WaitStateEntered,
            "Succeed" => EventType::SucceedStateEntered,
            "Fail" => EventType::FailStateEntered,
            "Parallel" => EventType::ParallelStateEntered,
            "Map" => EventType::MapStateEntered,
            _ => EventType::PassStateEntered,
        }
    }

    /// `{Type}StateExited` for a state type name.
    pub fn exited(state_type: &str) -> EventType {
        match state_type {
            "Task" => EventType::TaskStateExited,
            "Choice" => EventType::ChoiceStateExited,
            "Wait" => EventType::WaitStateExited,
            "Succeed" => EventType::SucceedStateExited,
            "Parallel" => EventType::ParallelStateExited,
            "Map" => EventType::MapStateExited,
            _ => EventType::PassStateExited,
        }
    }

    /// `{Type}StateAborted` for a state type name.
    pub fn aborted(state_type: &str) -> EventType {
        match state_type {
            "Task" => EventType::TaskStateAborted,
            "Wait" => EventType::WaitStateAborted,
            "Parallel" => EventType::ParallelStateAborted,
            "Map" => EventType::MapStateAborted,
            "Choice" => EventType::ChoiceStateAborted,
            _ => EventType::PassStateAborted,
        }
    }
}

/// One history event. `details` is the `…EventDetails` object, in AWS's key order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HistoryEvent {
    pub id: u64,
    pub previous_event_id: u64,
    pub timestamp_ms: i64,
    pub event_type: EventType,
    pub details: Option<Map<String, Value>>,
}

impl HistoryEvent {
    /// The event as AWS's JSON API returns it; `timestamp` is epoch seconds.
    pub fn to_aws_json(&self) -> Value {
        self.to_json(true)
    }

    /// A compact form for tests and golden files: `{"type", "id", "previousEventId", <details>}`
    /// without the timestamp.
    pub fn to_golden_json(&self) -> Value {
        self.to_json(false)
    }

    fn to_json(&self, timestamp: bool) -> Value {
        let mut m = Map::new();
        if timestamp {
            let secs = self.timestamp_ms as f64 / 1000.0;
            m.insert("timestamp".into(), crate::json::number_from_f64(secs));
        }
        m.insert(
            "type".into(),
            Value::String(self.event_type.as_str().into()),
        );
        m.insert("id".into(), Value::from(self.id));
        m.insert(
            "previousEventId".into(),
            Value::from(self.previous_event_id),
        );
        if let (Some(key), Some(d)) = (self.event_type.details_key(), &self.details) {
            m.insert(key, Value::Object(d.clone()));
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_keys() {
        assert_eq!(
            EventType::TaskStateEntered.details_key().unwrap(),
            "stateEnteredEventDetails"
        );
        assert_eq!(
            EventType::MapStateExited.details_key().unwrap(),
            "stateExitedEventDetails"
        );
        assert_eq!(
            EventType::ExecutionStarted.details_key().unwrap(),
            "executionStartedEventDetails"
        );
        assert_eq!(
            EventType::MapIterationStarted.details_key().unwrap(),
            "mapIterationStartedEventDetails"
        );
        assert_eq!(
            EventType::LambdaFunctionScheduled.details_key().unwrap(),
            "lambdaFunctionScheduledEventDetails"
        );
        assert_eq!(EventType::ParallelStateStarted.details_key(), None);
        assert_eq!(EventType::TaskStateAborted.details_key(), None);
        assert_eq!(EventType::MapStateSucceeded.details_key(), None);
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(*t));
        }
    }
}
