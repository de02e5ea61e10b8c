//! Budgets shared by many reactors: the server-wide bounds that no single
//! message or connection can see on its own (PROTOCOL.md §6, "bounded
//! memory").
//!
//! Each message's [`ServerReactor`](crate::ServerReactor) has its own
//! limits, but a server runs many at once: 64 clients each within every
//! per-message limit still add up. A [`SharedBudget`] is a count with a
//! limit, shared by handle; a reactor takes units with
//! [`SharedBudget::try_take`] and holds them as a [`Permit`], which gives
//! them back when dropped. No clock, no waiting, no async: a reactor that
//! cannot get units refuses the input that asked for them, and the driver
//! decides nothing.
//!
//! This module is not a semaphore for tasks to wait on (a driver that wants
//! to wait uses its runtime's); it only counts.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A server-wide count with a limit, shared by cloning the handle.
///
/// Two handles are equal when they count the same budget.
///
/// ```
/// use framegate_wire::SharedBudget;
///
/// let decoders = SharedBudget::new(2);
/// let first = decoders.try_take(1).unwrap();
/// let second = decoders.clone().try_take(1).unwrap();
/// assert!(decoders.try_take(1).is_none());
/// drop(first);
/// assert_eq!(decoders.in_use(), 1);
/// # drop(second);
/// ```
#[derive(Clone)]
pub struct SharedBudget {
    inner: Arc<Counter>,
}

struct Counter {
    used: AtomicUsize,
    limit: usize,
    /// The larger budget each unit also draws on, and what a unit costs
    /// there.
    pool: Option<(Arc<Counter>, usize)>,
}

impl Counter {
    /// Adds `n` if the total stays within the limit, and the pool (if any)
    /// has room for their cost; otherwise changes nothing.
    fn try_add(&self, n: usize) -> bool {
        let added = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= self.limit)
            })
            .is_ok();
        if !added {
            return false;
        }
        if let Some((pool, cost)) = &self.pool
            && !n.checked_mul(*cost).is_some_and(|c| pool.try_add(c))
        {
            self.used.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        true
    }

    fn sub(&self, n: usize) {
        if n > 0 {
            self.used.fetch_sub(n, Ordering::AcqRel);
            if let Some((pool, cost)) = &self.pool {
                // try_add took exactly this product, so it does not overflow.
                pool.sub(n.saturating_mul(*cost));
            }
        }
    }
}

impl SharedBudget {
    /// A budget of `limit` units, none in use.
    pub fn new(limit: usize) -> Self {
        SharedBudget {
            inner: Arc::new(Counter {
                used: AtomicUsize::new(0),
                limit,
                pool: None,
            }),
        }
    }

    /// A budget of `limit` units whose every unit also takes `unit_cost`
    /// units of `pool` (e.g. a count of decoders drawing on a server's
    /// memory budget in bytes, at a decoder's worst-case size): units are
    /// taken only when both have room, and given back to both. Many
    /// budgets may draw on one pool, so each keeps its own limit and the
    /// pool bounds their sum.
    ///
    /// ```
    /// use framegate_wire::SharedBudget;
    ///
    /// let memory = SharedBudget::new(100);
    /// let decoders = SharedBudget::drawing_on(8, &memory, 40);
    /// let arguments = SharedBudget::drawing_on(1000, &memory, 1);
    /// let a = decoders.try_take(2).unwrap();
    /// assert_eq!(memory.in_use(), 80);
    /// assert!(arguments.try_take(21).is_none(), "the pool is the bound now");
    /// let b = arguments.try_take(20).unwrap();
    /// drop(a);
    /// assert_eq!((memory.in_use(), decoders.in_use()), (20, 0));
    /// # drop(b);
    /// ```
    pub fn drawing_on(limit: usize, pool: &SharedBudget, unit_cost: usize) -> Self {
        SharedBudget {
            inner: Arc::new(Counter {
                used: AtomicUsize::new(0),
                limit,
                pool: Some((pool.inner.clone(), unit_cost)),
            }),
        }
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Units held by permits now.
    pub fn in_use(&self) -> usize {
        self.inner.used.load(Ordering::Acquire)
    }

    /// Units free now.
    pub fn available(&self) -> usize {
        self.limit().saturating_sub(self.in_use())
    }

    /// Takes `n` units, or none if that would pass the limit. Taking 0 always
    /// succeeds (a permit to [grow](Permit::try_grow) later).
    #[must_use]
    pub fn try_take(&self, n: usize) -> Option<Permit> {
        self.inner.try_add(n).then(|| Permit {
            counter: self.inner.clone(),
            amount: n,
        })
    }
}

impl PartialEq for SharedBudget {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for SharedBudget {}

impl fmt::Debug for SharedBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBudget")
            .field("in_use", &self.in_use())
            .field("limit", &self.limit())
            .finish()
    }
}

/// Units taken from a [`SharedBudget`]; dropping the permit gives them back.
#[must_use = "dropping a permit gives its units back at once"]
pub struct Permit {
    counter: Arc<Counter>,
    amount: usize,
}

impl Permit {
    /// Units this permit holds.
    pub fn amount(&self) -> usize {
        self.amount
    }

    /// Takes `n` more units into this permit, or nothing (returning false)
    /// if that would pass the budget's limit.
    pub fn try_grow(&mut self, n: usize) -> bool {
        if !self.counter.try_add(n) {
            return false;
        }
        self.amount += n;
        true
    }

    /// Gives `n` of this permit's units back (at most all it holds).
    pub fn give_back(&mut self, n: usize) {
        let n = n.min(self.amount);
        self.amount -= n;
        self.counter.sub(n);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.counter.sub(self.amount);
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("amount", &self.amount)
            .field("limit", &self.counter.limit)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_up_to_the_limit_and_gives_back_on_drop() {
        let budget = SharedBudget::new(10);
        let a = budget.try_take(6).unwrap();
        assert!(budget.try_take(5).is_none());
        let b = budget.try_take(4).unwrap();
        assert_eq!((budget.in_use(), budget.available()), (10, 0));
        assert!(budget.try_take(0).is_some());
        drop(a);
        assert_eq!(budget.in_use(), 4);
        drop(b);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_permit_grows_and_gives_back_in_parts() {
        let budget = SharedBudget::new(100);
        let mut p = budget.try_take(0).unwrap();
        assert!(p.try_grow(60));
        assert!(!p.try_grow(41));
        assert_eq!(p.amount(), 60);
        p.give_back(20);
        assert_eq!(budget.in_use(), 40);
        // Never more than it holds.
        p.give_back(1000);
        assert_eq!((p.amount(), budget.in_use()), (0, 0));
        assert!(p.try_grow(100));
        drop(p);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn clones_count_the_same_budget() {
        let budget = SharedBudget::new(1);
        let other = budget.clone();
        assert_eq!(budget, other);
        assert_ne!(budget, SharedBudget::new(1));
        let _held = other.try_take(1).unwrap();
        assert!(budget.try_take(1).is_none());
        // Near usize::MAX the sum does not wrap.
        let huge = SharedBudget::new(usize::MAX);
        let _p = huge.try_take(usize::MAX).unwrap();
        assert!(huge.try_take(1).is_none());
    }

    #[test]
    fn threads_never_take_more_than_the_limit() {
        let budget = SharedBudget::new(1000);
        let held: Vec<Vec<Permit>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let budget = budget.clone();
                    s.spawn(move || std::iter::from_fn(|| budget.try_take(7)).collect::<Vec<_>>())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(held.iter().map(Vec::len).sum::<usize>() * 7, 994);
        assert_eq!(budget.in_use(), 994);
        drop(held);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_full_pool_refuses_and_the_budget_keeps_nothing() {
        let memory = SharedBudget::new(100);
        let decoders = SharedBudget::drawing_on(4, &memory, 30);
        let requests = SharedBudget::drawing_on(1000, &memory, 7);
        let mut d = decoders.try_take(3).unwrap();
        assert_eq!(memory.in_use(), 90);
        // Room in its own limit, none in the pool: refused, and its own
        // count is as before.
        assert!(decoders.try_take(1).is_none());
        assert_eq!(decoders.in_use(), 3);
        assert!(requests.try_take(2).is_none());
        let mut r = requests.try_take(1).unwrap();
        assert_eq!((memory.in_use(), requests.in_use()), (97, 1));
        assert!(!r.try_grow(1));
        assert_eq!((r.amount(), requests.in_use()), (1, 1));
        // Giving back frees both.
        d.give_back(2);
        assert_eq!((memory.in_use(), decoders.in_use()), (37, 1));
        assert!(r.try_grow(9));
        assert_eq!(memory.in_use(), 100);
        drop(d);
        drop(r);
        assert_eq!(
            (memory.in_use(), decoders.in_use(), requests.in_use()),
            (0, 0, 0)
        );
        // Its own limit still holds with the pool empty.
        assert!(decoders.try_take(5).is_none());
        assert_eq!(memory.in_use(), 0);
    }

    #[test]
    fn a_cost_that_overflows_is_refused() {
        let memory = SharedBudget::new(usize::MAX);
        let huge = SharedBudget::drawing_on(usize::MAX, &memory, usize::MAX / 2);
        assert!(huge.try_take(3).is_none());
        assert_eq!((memory.in_use(), huge.in_use()), (0, 0));
        let one = huge.try_take(2).unwrap();
        assert_eq!(memory.in_use(), usize::MAX - 1);
        drop(one);
        assert_eq!(memory.in_use(), 0);
    }

    #[test]
    fn threads_on_budgets_of_one_pool_never_pass_it() {
        let memory = SharedBudget::new(10_000);
        let budgets = [
            SharedBudget::drawing_on(usize::MAX, &memory, 3),
            SharedBudget::drawing_on(1_000, &memory, 1),
            SharedBudget::drawing_on(usize::MAX, &memory, 13),
        ];
        let held: Vec<Vec<Permit>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..6)
                .map(|i| {
                    let budget = budgets[i % 3].clone();
                    s.spawn(move || std::iter::from_fn(|| budget.try_take(1)).collect::<Vec<_>>())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let cost: usize = budgets
            .iter()
            .zip([3, 1, 13])
            .map(|(b, c)| b.in_use() * c)
            .sum();
        assert_eq!(cost, memory.in_use());
        assert!(memory.in_use() <= 10_000 && memory.in_use() > 10_000 - 13);
        assert!(budgets[1].in_use() <= 1_000);
        drop(held);
        assert_eq!(memory.in_use(), 0);
    }
}
