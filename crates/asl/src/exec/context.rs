//! What paths and expressions see: the context object and variables of a frame.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::{Execution, FrameId};
use crate::json;
use crate::jsonata::Bindings;
use crate::path::Resolver;

/// A resolver bound to one frame and one `$` value.
pub(crate) struct Scope<'a> {
    pub exec: &'a Execution,
    pub frame: FrameId,
    pub input: &'a Value,
    /// `$$.Map.Item` while an ItemSelector is evaluated.
    pub map_item: Option<(usize, &'a Value, Option<&'a str>)>,
}

impl Execution {
    /// Looks a variable up from `frame` outwards.
    pub(crate) fn lookup_var(&self, mut frame: FrameId, name: &str) -> Option<&Value> {
        loop {
            let f = self.frame(frame);
            if let Some(v) = f.vars.get(name) {
                return Some(v);
            }
            if f.scope_root {
                return None;
            }
            frame = f.parent.as_ref()?.frame;
        }
    }

    /// Builds the context object for a frame.
    pub(crate) fn context_object(
        &self,
        frame: FrameId,
        map_item: Option<(usize, &Value, Option<&str>)>,
    ) -> Value {
        let mut ctx = Map::new();
        for key in ["Execution", "StateMachine", "State", "Task", "Map"] {
            if let Some(v) = self.context_section(frame, map_item, key) {
                ctx.insert(key.into(), v);
            }
        }
        Value::Object(ctx)
    }

    /// One top-level section of the context object; only that section is built.
    pub(crate) fn context_section(
        &self,
        frame: FrameId,
        map_item: Option<(usize, &Value, Option<&str>)>,
        key: &str,
    ) -> Option<Value> {
        let info = &self.st.info;
        let active = self.frame(frame).active.as_ref();
        let mut m = Map::new();
        match (key, info.scope.as_deref()) {
            // A spread iteration or branch runs in its parent's name.
            ("Execution", Some(p)) => {
                m.insert("Id".into(), Value::String(p.execution_arn.clone()));
                m.insert("Input".into(), p.input.clone());
                m.insert(
                    "StartTime".into(),
                    Value::String(json::iso_millis(p.start_ms)),
                );
                m.insert("Name".into(), Value::String(p.name.clone()));
                m.insert("RoleArn".into(), Value::String(p.role_arn.clone()));
                m.insert("RedriveCount".into(), Value::from(p.redrive_count));
            }
            ("StateMachine", Some(p)) => {
                m.insert("Id".into(), Value::String(p.state_machine_arn.clone()));
                m.insert("Name".into(), Value::String(p.state_machine_name.clone()));
            }
            ("Execution", None) => {
                m.insert("Id".into(), Value::String(info.execution_arn.clone()));
                m.insert("Input".into(), info.input.clone());
                m.insert(
                    "StartTime".into(),
                    Value::String(json::iso_millis(self.st.start_ms)),
                );
                m.insert("Name".into(), Value::String(info.name.clone()));
                m.insert("RoleArn".into(), Value::String(info.role_arn.clone()));
                m.insert("RedriveCount".into(), Value::from(info.redrive_count));
            }
            ("StateMachine", None) => {
                m.insert("Id".into(), Value::String(info.state_machine_arn.clone()));
                m.insert(
                    "Name".into(),
                    Value::String(info.state_machine_name.clone()),
                );
            }
            ("State", _) => {
                let a = active?;
                let st = self.sm.state(self.frame(frame).block, a.state);
                m.insert(
                    "EnteredTime".into(),
                    Value::String(json::iso_millis(a.entered_ms)),
                );
                m.insert("Name".into(), Value::String(st.name.clone()));
                m.insert("RetryCount".into(), Value::from(a.retry_count));
            }
            ("Task", _) => {
                m.insert("Token".into(), Value::String(active?.token.clone()?));
            }
            ("Map", _) => {
                let (index, value, key) = map_item?;
                let mut item = Map::new();
                item.insert("Index".into(), Value::from(index));
                if let Some(k) = key {
                    item.insert("Key".into(), Value::String(k.to_string()));
                }
                item.insert("Value".into(), value.clone());
                item.insert("Source".into(), Value::String("STATE_DATA".into()));
                m.insert("Item".into(), Value::Object(item));
            }
            _ => return None,
        }
        Some(Value::Object(m))
    }

    /// Evaluates a JSONata-side closure with bindings for a frame.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn with_bindings<T>(
        &self,
        frame: FrameId,
        input: &Value,
        result: Option<&Value>,
        error_output: Option<&Value>,
        map_item: Option<(usize, &Value, Option<&str>)>,
        seed: u64,
        f: impl FnOnce(&Bindings<'_>) -> T,
    ) -> T {
        let ctx = || self.context_object(frame, map_item);
        let var = |name: &str| self.lookup_var(frame, name).cloned();
        let b = Bindings {
            input,
            result,
            error_output,
            context: &ctx,
            var: &var,
            now_ms: self.now,
            seed,
        };
        f(&b)
    }
}

impl Resolver for Scope<'_> {
    fn input(&self) -> &Value {
        self.input
    }

    fn context(&self) -> Cow<'_, Value> {
        Cow::Owned(self.exec.context_object(self.frame, self.map_item))
    }

    fn var(&self, name: &str) -> Option<&Value> {
        self.exec.lookup_var(self.frame, name)
    }

    fn context_field(&self, key: &str) -> Option<Value> {
        self.exec.context_section(self.frame, self.map_item, key)
    }
}
