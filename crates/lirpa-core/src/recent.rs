//! A small cache of values computed for recent inputs, for operators whose rules are
//! called many times with the same inputs (every α/β-CROWN iteration crosses a node
//! with the same bounds, in its sweep and in its adjoint).
//!
//! Keys are exact bit patterns (equal keys mean equal inputs, so a hit returns what
//! would be computed again); a hash of the key is compared first, because keys of
//! consecutive iterations often share long equal prefixes. Newest first, bounded in
//! entries (a look-up scans them) and in bytes, with the running size kept so that an
//! insertion costs no scan.

use std::collections::VecDeque;

/// The cache; `V` is usually an `Arc` (a hit clones it).
#[derive(Debug)]
pub struct Recent<V> {
    entries: VecDeque<Entry<V>>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

#[derive(Debug)]
struct Entry<V> {
    hash: u64,
    key: Vec<u64>,
    bytes: usize,
    value: V,
}

/// The hash compared before a key: four independent lanes (a single chain of
/// multiplications was 5% of a branch-and-bound run on oval21, at one multiply latency
/// per element), folded together at the end.
fn hash(key: &[u64]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mix = |h: u64, x: u64| (h.rotate_left(5) ^ x).wrapping_mul(K);
    let mut lanes = [key.len() as u64, 1, 2, 3];
    let chunks = key.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        for (h, &x) in lanes.iter_mut().zip(c) {
            *h = mix(*h, x);
        }
    }
    for (h, &x) in lanes.iter_mut().zip(rest) {
        *h = mix(*h, x);
    }
    lanes.iter().fold(0, |a, &h| mix(a, h))
}

impl<V: Clone> Recent<V> {
    /// At most `max_entries` values and `max_bytes` bytes (keys included); a value
    /// larger than a quarter of `max_bytes` is not kept.
    pub const fn new(max_entries: usize, max_bytes: usize) -> Self {
        Recent { entries: VecDeque::new(), bytes: 0, max_entries, max_bytes }
    }

    /// The value kept for `key`, if any.
    pub fn get(&self, key: &[u64]) -> Option<V> {
        let h = hash(key);
        self.entries.iter().find(|e| e.hash == h && e.key == key).map(|e| e.value.clone())
    }

    /// Keep `value` (of `bytes` bytes besides its key) for `key`, evicting the oldest
    /// entries beyond the bounds.
    pub fn put(&mut self, key: Vec<u64>, bytes: usize, value: V) {
        let bytes = bytes.saturating_add(8 * key.len());
        if bytes > self.max_bytes / 4 {
            return;
        }
        self.bytes += bytes;
        self.entries.push_front(Entry { hash: hash(&key), key, bytes, value });
        while self.entries.len() > 1 && (self.bytes > self.max_bytes || self.entries.len() > self.max_entries)
        {
            let evicted = self.entries.pop_back().expect("more than one entry");
            self.bytes -= evicted.bytes;
        }
    }
}

impl<V: Clone> Default for Recent<V> {
    /// 64 entries, 32 MB.
    fn default() -> Self {
        Recent::new(64, 32 << 20)
    }
}

#[cfg(test)]
mod tests {
    use super::Recent;

    #[test]
    fn hits_equal_keys_only_and_evicts_the_oldest() {
        let mut r: Recent<u32> = Recent::new(2, 1 << 20);
        r.put(vec![1, 2], 0, 10);
        r.put(vec![1, 3], 0, 11);
        assert_eq!(r.get(&[1, 2]), Some(10));
        assert_eq!(r.get(&[1, 3]), Some(11));
        assert_eq!(r.get(&[1]), None);
        r.put(vec![4], 0, 12);
        assert_eq!(r.get(&[1, 2]), None, "the oldest entry goes beyond two entries");
        assert_eq!(r.get(&[4]), Some(12));
    }

    #[test]
    fn bounded_in_bytes() {
        let mut r: Recent<u32> = Recent::new(100, 1000);
        r.put(vec![0; 10], 300, 1); // 380 bytes: more than a quarter, not kept
        assert_eq!(r.get(&[0; 10]), None);
        for k in 0..10u64 {
            r.put(vec![k], 192, k as u32); // 200 bytes each
        }
        assert_eq!(r.get(&[9]), Some(9));
        assert_eq!(r.get(&[5]), Some(5));
        assert_eq!(r.get(&[4]), None, "five entries of 200 bytes fit in 1000");
    }
}
