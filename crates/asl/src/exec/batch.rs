//! `ItemBatcher`: a DISTRIBUTED Map's items grouped, in order, into child inputs.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::json;

/// An `ItemBatcher` resolved: `BatchInput`'s value and the maxima.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct BatchSpec {
    pub batch_input: Option<Value>,
    pub max_items: usize,
    pub max_bytes: usize,
}

/// Groups items into batches `{"BatchInput": ..., "Items": [...]}` of at most `max_items`
/// items and `max_bytes` bytes of compact JSON each. Items are pushed one by one, so the
/// caller can transform each (ItemSelector) without holding the list twice.
pub(crate) struct Batches {
    batch_input: Option<Value>,
    max_items: usize,
    max_bytes: usize,
    /// The bytes of a batch with no items.
    base: usize,
    current: Vec<Value>,
    bytes: usize,
    done: Vec<Value>,
    sizes: Vec<u64>,
}

/// An item that does not fit in a batch on its own: its size in bytes.
#[derive(Debug, PartialEq)]
pub(crate) struct TooLarge(pub usize);

impl Batches {
    pub(crate) fn new(batch_input: Option<Value>, max_items: usize, max_bytes: usize) -> Self {
        let mut b = Batches {
            batch_input,
            max_items: max_items.max(1),
            max_bytes,
            base: 0,
            current: Vec::new(),
            bytes: 0,
            done: Vec::new(),
            sizes: Vec::new(),
        };
        b.base = json::byte_len(&b.wrap(Vec::new()));
        b.bytes = b.base;
        b
    }

    pub(crate) fn from_spec(spec: BatchSpec) -> Self {
        Batches::new(spec.batch_input, spec.max_items, spec.max_bytes)
    }

    /// The batches closed so far, their sizes, and the items of the one still open.
    pub(crate) fn finish_closed(self) -> (Vec<Value>, Vec<u64>, Vec<Value>) {
        (self.done, self.sizes, self.current)
    }

    fn wrap(&self, items: Vec<Value>) -> Value {
        let mut m = Map::new();
        if let Some(bi) = &self.batch_input {
            m.insert("BatchInput".into(), bi.clone());
        }
        m.insert("Items".into(), Value::Array(items));
        Value::Object(m)
    }

    /// Adds the next item: to the current batch if it fits, else to a new one.
    pub(crate) fn push(&mut self, item: Value) -> Result<(), TooLarge> {
        let n = json::byte_len(&item);
        if self.base + n > self.max_bytes {
            return Err(TooLarge(n));
        }
        // A comma before every item but the first.
        let add = n + usize::from(!self.current.is_empty());
        let full = self.current.len() >= self.max_items || self.bytes + add > self.max_bytes;
        if !self.current.is_empty() && full {
            self.close();
        }
        self.bytes += n + usize::from(!self.current.is_empty());
        self.current.push(item);
        Ok(())
    }

    fn close(&mut self) {
        let items = std::mem::take(&mut self.current);
        self.sizes.push(items.len() as u64);
        let batch = self.wrap(items);
        self.done.push(batch);
        self.bytes = self.base;
    }

    /// The batches, and how many items each holds.
    pub(crate) fn finish(mut self) -> (Vec<Value>, Vec<u64>) {
        if !self.current.is_empty() {
            self.close();
        }
        (self.done, self.sizes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn batch(bi: Option<Value>, max_items: usize, max_bytes: usize, items: &[Value]) -> Value {
        let mut b = Batches::new(bi, max_items, max_bytes);
        for i in items {
            b.push(i.clone()).unwrap();
        }
        let (batches, sizes) = b.finish();
        let counted: Vec<u64> = batches
            .iter()
            .map(|b| b["Items"].as_array().unwrap().len() as u64)
            .collect();
        assert_eq!(counted, sizes);
        for b in &batches {
            assert!(json::byte_len(b) <= max_bytes, "{b} over {max_bytes} bytes");
        }
        Value::Array(batches)
    }

    #[test]
    fn by_count_in_order_with_the_batch_input_first() {
        let items: Vec<Value> = (1..=5).map(Value::from).collect();
        assert_eq!(
            serde_json::to_string(&batch(Some(json!({"b": 1})), 2, 1 << 20, &items)).unwrap(),
            r#"[{"BatchInput":{"b":1},"Items":[1,2]},{"BatchInput":{"b":1},"Items":[3,4]},{"BatchInput":{"b":1},"Items":[5]}]"#
        );
    }

    #[test]
    fn by_bytes_exactly_at_the_bound() {
        // {"Items":[]} is 12 bytes, "abc" 5, a comma 1: two fit in 23 bytes, not in 22.
        let items = vec![json!("abc"); 3];
        assert_eq!(
            batch(None, usize::MAX, 23, &items),
            json!([{"Items": ["abc", "abc"]}, {"Items": ["abc"]}])
        );
        assert_eq!(
            batch(None, usize::MAX, 22, &items),
            json!([{"Items": ["abc"]}, {"Items": ["abc"]}, {"Items": ["abc"]}])
        );
    }

    #[test]
    fn an_item_too_large_for_any_batch_is_refused() {
        let mut b = Batches::new(None, 10, 20);
        assert_eq!(b.push(json!("ab")), Ok(()));
        assert_eq!(b.push(json!("abcdefghij")), Err(TooLarge(12)));
    }

    #[test]
    fn no_items_no_batches() {
        let (batches, sizes) = Batches::new(None, 3, 100).finish();
        assert!(batches.is_empty() && sizes.is_empty());
    }
}
