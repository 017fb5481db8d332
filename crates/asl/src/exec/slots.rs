//! A set of child slots as sorted, disjoint ranges: what a redrive of a Map Run whose results
//! went to S3 keeps of the children that succeeded (mostly one range, whatever the count).

use serde::{Deserialize, Serialize};

/// Sorted, disjoint, non-adjacent half-open ranges `[start, end)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Slots(Vec<(usize, usize)>);

impl Slots {
    /// The set of `slots`, which come in increasing order.
    pub(crate) fn from_sorted(slots: impl IntoIterator<Item = usize>) -> Slots {
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        for s in slots {
            match ranges.last_mut() {
                Some((_, end)) if *end == s => *end += 1,
                Some((_, end)) if *end > s => {}
                _ => ranges.push((s, s + 1)),
            }
        }
        Slots(ranges)
    }

    /// This set and `more` (in any order).
    pub(crate) fn with(&self, more: impl IntoIterator<Item = usize>) -> Slots {
        let mut all: Vec<usize> = self.iter().chain(more).collect();
        all.sort_unstable();
        Slots::from_sorted(all)
    }

    pub(crate) fn contains(&self, slot: usize) -> bool {
        let i = self.0.partition_point(|(_, end)| *end <= slot);
        self.0.get(i).is_some_and(|(start, _)| *start <= slot)
    }

    pub(crate) fn len(&self) -> usize {
        self.0.iter().map(|(s, e)| e - s).sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every slot, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().flat_map(|(s, e)| *s..*e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_answer_membership() {
        let s = Slots::from_sorted([0, 1, 2, 5, 6, 9]);
        assert_eq!(s, Slots(vec![(0, 3), (5, 7), (9, 10)]));
        assert_eq!(s.len(), 6);
        let members: Vec<usize> = (0..11).filter(|i| s.contains(*i)).collect();
        assert_eq!(members, [0, 1, 2, 5, 6, 9]);
        assert_eq!(s.iter().collect::<Vec<_>>(), [0, 1, 2, 5, 6, 9]);
        // A hundred thousand children that succeeded but one: two ranges.
        let big = Slots::from_sorted((0..100_000).filter(|i| *i != 500));
        assert_eq!(big.0.len(), 2);
        assert!(!big.contains(500) && big.contains(499) && big.contains(99_999));
        assert!(!big.contains(100_000));
        assert!(Slots::default().is_empty() && !Slots::default().contains(0));
        // Repeats are taken once.
        assert_eq!(Slots::from_sorted([1, 1, 2]).len(), 2);
        // More slots, in any order, join the ranges.
        assert_eq!(s.with([4, 3, 8]), Slots(vec![(0, 7), (8, 10)]));
    }
}
