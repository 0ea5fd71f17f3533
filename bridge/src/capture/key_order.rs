//! Per-key order across batches in flight: a record may not be sent while an earlier batch
//! holding its partition key is still in flight, or Kinesis could store the two out of order
//! (batches complete in any order on the wire, only their acknowledgement is ordered).
//! Pure bookkeeping over batch sequence numbers, tested by script below; `Session` asks it.

use std::collections::HashMap;

/// The smallest size at which the key map is pruned.
const MIN_PRUNE: usize = 4096;

#[derive(Debug)]
pub struct KeyOrder {
    next_seq: u64,
    /// Batches `0..completed` have completed (completions arrive in order).
    completed: u64,
    /// The last batch each recently sent partition key went out in.
    last_batch: HashMap<String, u64>,
    /// The map is pruned to the keys still in flight when it grows past this: twice what the
    /// last pruning left, so pruning stays amortised O(1) per record and a backfill's many
    /// distinct keys do not pile up.
    prune_at: usize,
}

impl Default for KeyOrder {
    fn default() -> Self {
        Self {
            next_seq: 0,
            completed: 0,
            last_batch: HashMap::new(),
            prune_at: MIN_PRUNE,
        }
    }
}

impl KeyOrder {
    /// The in-flight batch a record with `key` must wait for, if one holds that key.
    pub fn waits_for(&self, key: &str) -> Option<u64> {
        self.last_batch
            .get(key)
            .copied()
            .filter(|seq| *seq >= self.completed)
    }

    /// Whether batch `seq` has completed.
    pub fn is_done(&self, seq: u64) -> bool {
        seq < self.completed
    }

    /// A batch holding `keys` goes out: its sequence number.
    pub fn submitted<'k>(&mut self, keys: impl Iterator<Item = &'k str>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        for key in keys {
            match self.last_batch.get_mut(key) {
                Some(last) => *last = seq,
                None => {
                    self.last_batch.insert(key.to_owned(), seq);
                }
            }
        }
        seq
    }

    /// The oldest batch in flight completed.
    pub fn completed(&mut self) {
        self.completed += 1;
        if self.last_batch.len() > self.prune_at {
            let completed = self.completed;
            self.last_batch.retain(|_, seq| *seq >= completed);
            self.prune_at = (2 * self.last_batch.len()).max(MIN_PRUNE);
        }
    }

    /// How many keys are remembered (for the pruning's test).
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.last_batch.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_waits_for_the_last_batch_in_flight_that_holds_it() {
        let mut order = KeyOrder::default();
        let first = order.submitted(["a", "b"].into_iter());
        let second = order.submitted(["b", "c"].into_iter());
        assert_eq!(order.waits_for("a"), Some(first));
        assert_eq!(order.waits_for("b"), Some(second), "the later batch holding it");
        assert_eq!(order.waits_for("z"), None, "a new key waits for nothing");
        order.completed();
        assert!(order.is_done(first) && !order.is_done(second));
        assert_eq!(order.waits_for("a"), None, "its batch is done");
        assert_eq!(order.waits_for("b"), Some(second));
        order.completed();
        assert_eq!(order.waits_for("b"), None);
        assert_eq!(order.waits_for("c"), None);
    }

    #[test]
    fn a_key_repeated_in_one_batch_and_again_later_follows_its_last_batch() {
        let mut order = KeyOrder::default();
        let first = order.submitted(["k", "k", "k"].into_iter());
        assert_eq!(order.waits_for("k"), Some(first));
        let second = order.submitted(["k"].into_iter());
        order.completed();
        assert_eq!(
            order.waits_for("k"),
            Some(second),
            "the first batch's completion frees nothing"
        );
    }

    #[test]
    fn many_distinct_keys_are_forgotten_once_their_batches_completed() {
        let mut order = KeyOrder::default();
        let names: Vec<String> = (0..10_000).map(|n| format!("key-{n}")).collect();
        for chunk in names.chunks(500) {
            order.submitted(chunk.iter().map(String::as_str));
            order.completed();
        }
        assert!(
            order.remembered() < 2 * MIN_PRUNE,
            "{} keys remembered",
            order.remembered()
        );
        // Pruning keeps every key whose batch is still in flight.
        let mut order = KeyOrder::default();
        order.submitted(names[..5_000].iter().map(String::as_str));
        let later = order.submitted(["x"].into_iter());
        order.completed();
        assert_eq!(order.remembered(), 1, "only the in-flight batch's key is kept");
        assert_eq!(order.waits_for("x"), Some(later));
    }
}
