//! The messages a channel has in flight, by offset, in about the space of their entries.
//!
//! A channel delivers in offset order, apart from redeliveries, and its consumers mostly finish
//! in that order too. So the entries live in a deque sorted by offset: a delivery appends, and a
//! FIN empties a slot, which leaves once it reaches either end, or with every other empty slot
//! when empty slots outnumber full ones. A hash map, what this replaces, kept a table of a
//! churning channel's entries at about three times their number, because of its tombstones.
//!
//! A redelivered message that finds no slot (its own was dropped) goes to the front if it is the
//! lowest offset, and otherwise to a small map of outliers, so no insert shifts the deque.
//!
//! Every offset is in at most one place: the window holds a slot for it, full or empty, or the
//! outliers hold it, never both. An outlier can end up outside the window once the window's
//! ends are trimmed, so an insert that finds no slot looks among the outliers first.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;

/// Empty slots the window keeps beyond half its length before it drops them all.
const SLACK: usize = 64;

#[derive(Debug)]
pub(crate) struct Flights<V> {
    /// Strictly increasing offsets; `None` is an empty slot.
    window: VecDeque<(u64, Option<V>)>,
    /// Empty slots in `window`.
    empty: usize,
    /// Entries below the window's last offset that have no slot in it.
    outliers: HashMap<u64, V>,
}

impl<V> Default for Flights<V> {
    fn default() -> Self {
        Self { window: VecDeque::new(), empty: 0, outliers: HashMap::default() }
    }
}

impl<V> Flights<V> {
    pub(crate) fn len(&self) -> usize {
        self.window.len() - self.empty + self.outliers.len()
    }

    fn position(&self, offset: u64) -> Result<usize, usize> {
        self.window.binary_search_by_key(&offset, |&(o, _)| o)
    }

    pub(crate) fn get(&self, offset: u64) -> Option<&V> {
        match self.position(offset) {
            Ok(i) => self.window[i].1.as_ref(),
            Err(_) => self.outliers.get(&offset),
        }
    }

    pub(crate) fn get_mut(&mut self, offset: u64) -> Option<&mut V> {
        match self.position(offset) {
            Ok(i) => self.window[i].1.as_mut(),
            Err(_) => self.outliers.get_mut(&offset),
        }
    }

    /// Adds or replaces the entry for `offset`.
    pub(crate) fn insert(&mut self, offset: u64, value: V) {
        match self.position(offset) {
            Ok(i) => {
                if self.window[i].1.replace(value).is_none() {
                    self.empty -= 1;
                }
            }
            Err(_) if self.outliers.contains_key(&offset) => {
                self.outliers.insert(offset, value);
            }
            Err(i) if i == self.window.len() => {
                self.make_room();
                self.window.push_back((offset, Some(value)));
            }
            Err(0) => {
                self.make_room();
                self.window.push_front((offset, Some(value)));
            }
            Err(_) => {
                self.outliers.insert(offset, value);
            }
        }
    }

    pub(crate) fn remove(&mut self, offset: u64) -> Option<V> {
        match self.position(offset) {
            Ok(i) => {
                let value = self.window[i].1.take()?;
                self.empty += 1;
                self.tidy();
                Some(value)
            }
            Err(_) => {
                let value = self.outliers.remove(&offset)?;
                if self.outliers.is_empty() && self.outliers.capacity() > SLACK {
                    self.outliers = HashMap::default();
                }
                Some(value)
            }
        }
    }

    /// Removes and returns the entries `remove` picks, in no particular order.
    pub(crate) fn remove_where(&mut self, mut remove: impl FnMut(&V) -> bool) -> Vec<(u64, V)> {
        let picked: Vec<u64> = self.iter().filter(|(_, v)| remove(v)).map(|(o, _)| o).collect();
        picked.into_iter().filter_map(|o| self.remove(o).map(|v| (o, v))).collect()
    }

    /// Every entry: the window's in offset order, then the outliers'.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &V)> {
        let window = self.window.iter().filter_map(|(o, v)| v.as_ref().map(|v| (*o, v)));
        window.chain(self.outliers.iter().map(|(&o, v)| (o, v)))
    }

    /// Removes every entry and gives back the memory.
    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }

    /// Grows a full window by a quarter, not the doubling a push would do: a channel's window
    /// sits at about its consumers' RDY, and doubling would leave up to half of it unused.
    fn make_room(&mut self) {
        if self.window.len() == self.window.capacity() {
            self.window.reserve_exact(self.window.len() / 4 + SLACK);
        }
    }

    /// Drops empty slots at the ends, and all of them once they outnumber the full ones; gives
    /// back memory the window no longer needs.
    fn tidy(&mut self) {
        while self.window.front().is_some_and(|(_, v)| v.is_none()) {
            self.window.pop_front();
            self.empty -= 1;
        }
        while self.window.back().is_some_and(|(_, v)| v.is_none()) {
            self.window.pop_back();
            self.empty -= 1;
        }
        if self.empty > self.window.len() / 2 + SLACK {
            self.window.retain(|(_, v)| v.is_some());
            self.empty = 0;
        }
        let wanted = 2 * (self.window.len() + SLACK);
        if self.window.capacity() > 2 * wanted {
            self.window.shrink_to(wanted);
        }
    }

    /// What the window holds, empty slots included: what it costs in memory.
    #[cfg(test)]
    fn slots(&self) -> usize {
        self.window.len() + self.outliers.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn in_order_churn_keeps_only_the_live_entries() {
        let mut flights = Flights::default();
        for offset in 0..100_000u64 {
            flights.insert(offset, offset);
            if offset >= 2_500 {
                assert_eq!(flights.remove(offset - 2_500), Some(offset - 2_500));
            }
        }
        assert_eq!(flights.len(), 2_500);
        assert_eq!(flights.slots(), 2_500);
        assert!(flights.outliers.is_empty());
        // Grown by quarters: well short of the 4,096 slots doubling would have reached.
        assert!(
            flights.window.capacity() <= 2_500 + 2_500 / 4 + SLACK,
            "{}",
            flights.window.capacity()
        );
    }

    #[test]
    fn a_stuck_entry_does_not_keep_the_slots_after_it() {
        let mut flights = Flights::default();
        flights.insert(0, 0);
        for offset in 1..100_000u64 {
            flights.insert(offset, offset);
            if offset >= 100 {
                assert_eq!(flights.remove(offset - 99), Some(offset - 99));
            }
        }
        assert_eq!(flights.len(), 100);
        // Empty slots are bounded by half the window plus the slack, not by what passed.
        assert!(flights.slots() <= 2 * 100 + 2 * SLACK, "{} slots", flights.slots());
        assert!(flights.window.capacity() < 4 * (flights.slots() + SLACK) + 1);
        assert_eq!(flights.get(0), Some(&0));
    }

    #[test]
    fn redeliveries_fill_their_slot_or_go_to_the_front_or_the_outliers() {
        let mut flights = Flights::default();
        for offset in 10..20u64 {
            flights.insert(offset, offset);
        }
        // An emptied slot in the middle is filled again in place.
        flights.remove(15);
        flights.insert(15, 150);
        assert_eq!(flights.get(15), Some(&150));
        assert!(flights.outliers.is_empty());
        // Below the window: the front.
        flights.insert(5, 50);
        assert_eq!(flights.window.front().map(|&(o, _)| o), Some(5));
        // Inside the window with no slot (dropped with the other empty ones): an outlier, found
        // and removed like the others.
        flights.remove(12);
        flights.window.retain(|(_, v)| v.is_some());
        flights.empty = 0;
        flights.insert(12, 120);
        assert_eq!(flights.outliers.get(&12), Some(&120));
        assert_eq!(flights.get(12), Some(&120));
        assert_eq!(flights.len(), 11);
        assert_eq!(flights.remove(12), Some(120));
        assert_eq!(flights.get(12), None);
        assert_eq!(flights.len(), 10);
    }

    #[test]
    fn an_outlier_left_outside_the_trimmed_window_is_still_the_one_entry_of_its_offset() {
        let mut flights = Flights::default();
        for offset in [0, 10, 20] {
            flights.insert(offset, offset);
        }
        flights.insert(5, 5);
        assert_eq!(flights.outliers.len(), 1);
        // The window's front goes, and 5 is now below it; an insert must not add a second 5.
        flights.remove(0);
        flights.insert(5, 50);
        assert_eq!(flights.len(), 3);
        assert_eq!(flights.remove(5), Some(50));
        assert_eq!(flights.get(5), None);
        assert_eq!(flights.len(), 2);
    }

    #[test]
    fn an_entry_costs_no_more_than_its_offset_and_value() {
        // The engine's values have a niche (a non-zero attempt count): an empty slot is free.
        type Value = (i64, std::num::NonZeroU16);
        assert_eq!(size_of::<(u64, Option<Value>)>(), size_of::<(u64, Value)>());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64),
        Remove(u64),
        RemoveOdd,
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            // Mostly appends and FINs near the front, as a channel does; some redeliveries.
            8 => (0..400u64).prop_map(Op::Insert),
            8 => (0..400u64).prop_map(Op::Remove),
            1 => Just(Op::RemoveOdd),
            1 => Just(Op::Clear),
        ]
    }

    proptest! {
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec(op(), 0..600)) {
            let mut flights = Flights::default();
            let mut model = BTreeMap::new();
            let mut next = 0u64;
            for op in ops {
                match op {
                    Op::Insert(back) => {
                        // Offsets near the top, or a redelivery of an older one.
                        let offset = if back % 3 == 0 { next.saturating_sub(back) } else { next };
                        next += 1;
                        flights.insert(offset, next);
                        model.insert(offset, next);
                    }
                    Op::Remove(back) => {
                        let offset = next.saturating_sub(back);
                        prop_assert_eq!(flights.remove(offset), model.remove(&offset));
                    }
                    Op::RemoveOdd => {
                        let mut removed = flights.remove_where(|v| v % 2 == 1);
                        removed.sort_unstable();
                        let expected: Vec<(u64, u64)> =
                            model.iter().filter(|(_, v)| *v % 2 == 1).map(|(&o, &v)| (o, v)).collect();
                        model.retain(|_, v| *v % 2 == 0);
                        prop_assert_eq!(removed, expected);
                    }
                    Op::Clear => {
                        flights.clear();
                        model.clear();
                    }
                }
                prop_assert_eq!(flights.len(), model.len());
                let mut all: Vec<(u64, u64)> = flights.iter().map(|(o, &v)| (o, v)).collect();
                all.sort_unstable();
                let expected: Vec<(u64, u64)> = model.iter().map(|(&o, &v)| (o, v)).collect();
                prop_assert_eq!(all, expected);
                for offset in next.saturating_sub(40)..next + 1 {
                    prop_assert_eq!(flights.get(offset), model.get(&offset));
                }
                prop_assert!(flights.empty <= flights.window.len() / 2 + SLACK);
            }
        }
    }
}
