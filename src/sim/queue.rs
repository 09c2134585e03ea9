//! The pending queue as the real server keeps it: a Python `heapq` of
//! `(number, prompt_id, …)` tuples, so `GET /queue` lists pending prompts in
//! the same (heap, not sorted) order and ties break on the prompt id.

use std::cmp::Ordering;

use serde_json::{Map, Value, json};

/// One queued prompt: `[number, prompt_id, prompt, extra_data, outputs]`.
#[derive(Debug, Clone)]
pub(crate) struct QueueItem {
    /// The number as the client sees it (int from the counter, float when
    /// the client gave one).
    pub number: Value,
    pub prompt_id: String,
    pub prompt: Map<String, Value>,
    pub extra_data: Map<String, Value>,
    pub outputs: Vec<String>,
}

impl QueueItem {
    fn key(&self) -> f64 {
        self.number.as_f64().unwrap_or(0.0)
    }

    fn lt(&self, other: &QueueItem) -> bool {
        match self.key().partial_cmp(&other.key()) {
            Some(Ordering::Less) => true,
            Some(Ordering::Equal) => self.prompt_id < other.prompt_id,
            _ => false,
        }
    }

    /// The item as `/queue` and history show it.
    pub fn to_json(&self) -> Value {
        json!([
            self.number,
            self.prompt_id,
            self.prompt,
            self.extra_data,
            self.outputs
        ])
    }

    /// The submitting client, if any.
    pub fn client_id(&self) -> Option<String> {
        self.extra_data
            .get("client_id")
            .and_then(Value::as_str)
            .map(str::to_string)
    }
}

/// `heapq` over a vector, sift for sift as CPython does it.
#[derive(Debug, Default)]
pub(crate) struct PromptQueue {
    heap: Vec<QueueItem>,
}

impl PromptQueue {
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn items(&self) -> &[QueueItem] {
        &self.heap
    }

    pub fn push(&mut self, item: QueueItem) {
        self.heap.push(item);
        let last = self.heap.len() - 1;
        self.sift_down(0, last);
    }

    pub fn pop(&mut self) -> Option<QueueItem> {
        let last = self.heap.pop()?;
        if self.heap.is_empty() {
            return Some(last);
        }
        let top = std::mem::replace(&mut self.heap[0], last);
        self.sift_up(0);
        Some(top)
    }

    pub fn clear(&mut self) {
        self.heap.clear();
    }

    /// Removes the first item (in heap order) with this id, then re-heapifies.
    pub fn remove(&mut self, prompt_id: &str) -> bool {
        let Some(i) = self.heap.iter().position(|x| x.prompt_id == prompt_id) else {
            return false;
        };
        self.heap.remove(i);
        self.heapify();
        true
    }

    fn heapify(&mut self) {
        let n = self.heap.len();
        for i in (0..n / 2).rev() {
            self.sift_up(i);
        }
    }

    // CPython `_siftdown`: move the item at `pos` up towards `start`.
    fn sift_down(&mut self, start: usize, mut pos: usize) {
        while pos > start {
            let parent = (pos - 1) >> 1;
            if self.heap[pos].lt(&self.heap[parent]) {
                self.heap.swap(pos, parent);
                pos = parent;
            } else {
                break;
            }
        }
    }

    // CPython `_siftup`: bubble the smaller child up to the leaf, then sift
    // down.
    fn sift_up(&mut self, mut pos: usize) {
        let end = self.heap.len();
        let start = pos;
        let mut child = 2 * pos + 1;
        while child < end {
            let right = child + 1;
            if right < end && !self.heap[child].lt(&self.heap[right]) {
                child = right;
            }
            self.heap.swap(pos, child);
            pos = child;
            child = 2 * pos + 1;
        }
        self.sift_down(start, pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: i64, id: &str) -> QueueItem {
        QueueItem {
            number: json!(n),
            prompt_id: id.into(),
            prompt: Map::new(),
            extra_data: Map::new(),
            outputs: vec![],
        }
    }

    #[test]
    fn pops_lowest_number_first() {
        let mut q = PromptQueue::default();
        for (n, id) in [(3, "c"), (1, "a"), (-5, "front"), (2, "b"), (1, "0")] {
            q.push(item(n, id));
        }
        let order: Vec<String> = std::iter::from_fn(|| q.pop().map(|i| i.prompt_id)).collect();
        assert_eq!(order, vec!["front", "0", "a", "b", "c"]);
    }
}
