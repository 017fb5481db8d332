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
            frame = f.parent.as_ref()?.frame;
        }
    }

    /// Builds the context object for a frame.
    pub(crate) fn context_object(
        &self,
        frame: FrameId,
        map_item: Option<(usize, &Value, Option<&str>)>,
    ) -> Value {
        let info = &self.info;
        let mut exec = Map::new();
        exec.insert("Id".into(), Value::String(info.execution_arn.clone()));
        exec.insert("Input".into(), info.input.clone());
        exec.insert(
            "StartTime".into(),
            Value::String(json::iso_millis(self.start_ms)),
        );
        exec.insert("Name".into(), Value::String(info.name.clone()));
        exec.insert("RoleArn".into(), Value::String(info.role_arn.clone()));
        exec.insert("RedriveCount".into(), Value::from(info.redrive_count));
        let mut sm = Map::new();
        sm.insert("Id".into(), Value::String(info.state_machine_arn.clone()));
        sm.insert(
            "Name".into(),
            Value::String(info.state_machine_name.clone()),
        );
        let mut ctx = Map::new();
        ctx.insert("Execution".into(), Value::Object(exec));
        ctx.insert("StateMachine".into(), Value::Object(sm));
        let f = self.frame(frame);
        if let Some(a) = &f.active {
            let st = self.sm.state(f.block, a.state);
            let mut state = Map::new();
            state.insert(
                "EnteredTime".into(),
                Value::String(json::iso_millis(a.entered_ms)),
            );
            state.insert("Name".into(), Value::String(st.name.clone()));
            state.insert("RetryCount".into(), Value::from(a.retry_count));
            ctx.insert("State".into(), Value::Object(state));
            if let Some(t) = &a.token {
                let mut task = Map::new();
                task.insert("Token".into(), Value::String(t.clone()));
                ctx.insert("Task".into(), Value::Object(task));
            }
        }
        if let Some((index, value, key)) = map_item {
            let mut item = Map::new();
            item.insert("Index".into(), Value::from(index));
            if let Some(k) = key {
                item.insert("Key".into(), Value::String(k.to_string()));
            }
            item.insert("Value".into(), value.clone());
            item.insert("Source".into(), Value::String("STATE_DATA".into()));
            let mut m = Map::new();
            m.insert("Item".into(), Value::Object(item));
            ctx.insert("Map".into(), Value::Object(m));
        }
        Value::Object(ctx)
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
}
