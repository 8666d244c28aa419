//! A set of offsets stored as disjoint half-open ranges, so that millions of consecutive offsets
//! (a finished stretch of the log, the unfinished stretch after a crash) cost one entry.

use std::collections::BTreeMap;
use std::ops::Range;

/// Disjoint, non-adjacent half-open ranges of offsets: `start -> end`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RangeSet {
    ranges: BTreeMap<u64, u64>,
    len: u64,
}

impl RangeSet {
    /// Number of offsets in the set.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Number of ranges: what the set costs in memory.
    #[cfg(test)]
    pub(crate) fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// The range holding `offset`, if any.
    pub(crate) fn range_of(&self, offset: u64) -> Option<Range<u64>> {
        let (&start, &end) = self.ranges.range(..=offset).next_back()?;
        (offset < end).then_some(start..end)
    }

    /// Number of offsets of the set inside `range`. Costs one step per range it overlaps.
    pub(crate) fn count_in(&self, range: Range<u64>) -> u64 {
        let first = self.range_of(range.start).map_or(range.start, |r| r.start);
        self.ranges
            .range(first..range.end)
            .map(|(&start, &end)| end.min(range.end).saturating_sub(start.max(range.start)))
            .sum()
    }

    pub(crate) fn contains(&self, offset: u64) -> bool {
        self.range_of(offset).is_some()
    }

    pub(crate) fn insert(&mut self, offset: u64) {
        self.insert_range(offset..offset.saturating_add(1));
    }

    /// Adds every offset of `range`, merging with the ranges it touches.
    pub(crate) fn insert_range(&mut self, range: Range<u64>) {
        if range.is_empty() {
            return;
        }
        let (mut start, mut end) = (range.start, range.end);
        // Merge with a range that starts before and reaches `start`.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back()
            && e >= start
        {
            start = s;
            end = end.max(e);
            self.ranges.remove(&s);
            self.len -= e - s;
        }
        // Absorb every range that starts inside `[start, end]`.
        while let Some((&s, &e)) = self.ranges.range(start..=end).next() {
            end = end.max(e);
            self.ranges.remove(&s);
            self.len -= e - s;
        }
        self.ranges.insert(start, end);
        self.len += end - start;
    }

    /// Removes `offset`; returns whether it was in the set.
    pub(crate) fn remove(&mut self, offset: u64) -> bool {
        let Some(range) = self.range_of(offset) else {
            return false;
        };
        self.ranges.remove(&range.start);
        if range.start < offset {
            self.ranges.insert(range.start, offset);
        }
        if offset + 1 < range.end {
            self.ranges.insert(offset + 1, range.end);
        }
        self.len -= 1;
        true
    }

    /// The smallest offset in the set.
    pub(crate) fn first(&self) -> Option<u64> {
        self.ranges.first_key_value().map(|(&start, _)| start)
    }

    /// Removes and returns the smallest offset.
    pub(crate) fn pop_first(&mut self) -> Option<u64> {
        let first = self.first()?;
        self.remove(first);
        Some(first)
    }

    /// Removes every offset below `offset`.
    pub(crate) fn remove_below(&mut self, offset: u64) {
        while let Some((&start, &end)) = self.ranges.first_key_value() {
            if start >= offset {
                break;
            }
            self.ranges.remove(&start);
            self.len -= end - start;
            if end > offset {
                self.ranges.insert(offset, end);
                self.len += end - offset;
                break;
            }
        }
    }

    /// Removes every offset at or above `offset`.
    pub(crate) fn remove_from(&mut self, offset: u64) {
        let mut above = self.ranges.split_off(&offset);
        if let Some((_, end)) = self.ranges.range_mut(..offset).next_back()
            && *end > offset
        {
            above.insert(offset, *end);
            *end = offset;
        }
        self.len -= above.iter().map(|(s, e)| e - s).sum::<u64>();
    }

    /// Removes every offset in `range`.
    pub(crate) fn remove_range(&mut self, range: Range<u64>) {
        if range.is_empty() {
            return;
        }
        let mut upper = self.clone();
        upper.remove_below(range.end);
        self.remove_from(range.start);
        for (start, end) in upper.ranges {
            self.insert_range(start..end);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.ranges.clear();
        self.len = 0;
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.ranges.iter().map(|(&start, &end)| start..end)
    }
}

impl FromIterator<Range<u64>> for RangeSet {
    fn from_iter<I: IntoIterator<Item = Range<u64>>>(iter: I) -> Self {
        let mut set = Self::default();
        for range in iter {
            set.insert_range(range);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn count_in_counts_only_the_overlap() {
        let mut set = RangeSet::default();
        set.insert_range(2..5);
        set.insert_range(8..12);
        set.insert(20);
        assert_eq!(set.count_in(0..100), 8);
        assert_eq!(set.count_in(3..9), 3);
        assert_eq!(set.count_in(5..8), 0);
        assert_eq!(set.count_in(11..21), 2);
        assert_eq!(set.count_in(4..4), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64),
        InsertRange(u64, u64),
        Remove(u64),
        PopFirst,
        RemoveBelow(u64),
        RemoveFrom(u64),
        RemoveRange(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let offset = 0u64..64;
        prop_oneof![
            offset.clone().prop_map(Op::Insert),
            (offset.clone(), 0u64..10).prop_map(|(s, n)| Op::InsertRange(s, s + n)),
            offset.clone().prop_map(Op::Remove),
            Just(Op::PopFirst),
            offset.clone().prop_map(Op::RemoveBelow),
            offset.clone().prop_map(Op::RemoveFrom),
            (offset, 0u64..10).prop_map(|(s, n)| Op::RemoveRange(s, s + n)),
        ]
    }

    proptest! {
        /// The range set behaves exactly like a set of single offsets, and its ranges stay
        /// disjoint and non-adjacent (so the representation is the smallest possible).
        #[test]
        fn range_set_matches_a_plain_set(ops in prop::collection::vec(op(), 0..64)) {
            let mut set = RangeSet::default();
            let mut model = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Insert(o) => { set.insert(o); model.insert(o); }
                    Op::InsertRange(s, e) => { set.insert_range(s..e); model.extend(s..e); }
                    Op::Remove(o) => prop_assert_eq!(set.remove(o), model.remove(&o)),
                    Op::PopFirst => prop_assert_eq!(set.pop_first(), model.pop_first()),
                    Op::RemoveBelow(o) => { set.remove_below(o); model.retain(|&x| x >= o); }
                    Op::RemoveFrom(o) => { set.remove_from(o); model.retain(|&x| x < o); }
                    Op::RemoveRange(s, e) => {
                        set.remove_range(s..e);
                        model.retain(|&x| x < s || x >= e);
                    }
                }
                let flat: BTreeSet<u64> = set.iter().flatten().collect();
                prop_assert_eq!(&flat, &model);
                prop_assert_eq!(set.len(), model.len() as u64);
                for o in 0..80 {
                    prop_assert_eq!(set.contains(o), model.contains(&o));
                }
                let ranges: Vec<_> = set.iter().collect();
                for pair in ranges.windows(2) {
                    prop_assert!(pair[0].end < pair[1].start, "ranges {:?} touch", pair);
                }
                prop_assert!(ranges.iter().all(|r| !r.is_empty()));
            }
        }
    }

    #[test]
    fn a_million_consecutive_offsets_are_one_range() {
        // Goal: finished stretches cost O(1). Method: insert 10^6 offsets one by one in order.
        let mut set = RangeSet::default();
        for offset in 0..1_000_000 {
            set.insert(offset);
        }
        assert_eq!(set.range_count(), 1);
        assert_eq!(set.len(), 1_000_000);
    }
}
