//! Delta debugging: Zeller and Hildebrandt's `ddmin`, the smallest subset of a list
//! (1-minimal: removing any one element makes the test pass) that still makes a test
//! fail, found by trying chunks and their complements at ever finer granularity.
//!
//! Pure: the test is a callback over subsets of indices `0..n`, asked a batch of
//! candidates at a time so a caller can run them in parallel. The first failing
//! candidate in order is taken, exactly as one by one, so the result does not depend on
//! the batch size (a batch only costs the tests after that candidate).

use std::collections::HashMap;

/// Answers, for each candidate subset, whether the failure still happens.
pub type Test<'a, E> = dyn FnMut(&[Vec<usize>]) -> Result<Vec<bool>, E> + 'a;

/// The smallest failing subset found, how many distinct subsets were tested, and
/// whether the search ran to its end (it is 1-minimal) or stopped at the test limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reduced {
    pub kept: Vec<usize>,
    pub tests: usize,
    pub complete: bool,
}

/// `test` answers, for each candidate subset (sorted indices), whether the failure still
/// happens with only those elements. The caller has checked that the whole list fails.
/// The empty subset is tried first: a failure that needs none of the elements. After
/// `limit` tests the search stops with the smallest failing subset found so far.
pub fn ddmin<E>(n: usize, batch: usize, limit: usize, test: &mut Test<E>) -> Result<Reduced, E> {
    let mut memo: HashMap<Vec<usize>, bool> = HashMap::new();
    let mut current: Vec<usize> = (0..n).collect();
    memo.insert(current.clone(), true);
    let tested = |memo: &HashMap<Vec<usize>, bool>| memo.len() - 1;
    let done = |kept: Vec<usize>, memo: &HashMap<Vec<usize>, bool>, complete: bool| Reduced {
        kept,
        tests: tested(memo),
        complete,
    };
    if limit == 0 {
        return Ok(done(current, &memo, n == 0));
    }
    if first_failing(&[Vec::new()], batch, limit, &mut memo, test)?.is_some() {
        return Ok(done(Vec::new(), &memo, true));
    }
    let mut granularity = 2;
    while current.len() >= 2 {
        if tested(&memo) >= limit {
            return Ok(done(current, &memo, false));
        }
        let chunks = split(&current, granularity);
        let mut candidates = chunks.clone();
        // With two chunks, each one's complement is the other chunk.
        if granularity > 2 {
            candidates.extend(
                chunks
                    .iter()
                    .map(|c| current.iter().copied().filter(|i| !c.contains(i)).collect()),
            );
        }
        match first_failing(&candidates, batch, limit, &mut memo, test)? {
            Some(i) if i < chunks.len() => {
                current = candidates.swap_remove(i);
                granularity = 2;
            }
            Some(i) => {
                current = candidates.swap_remove(i);
                granularity = (granularity - 1).max(2);
            }
            None if tested(&memo) >= limit => return Ok(done(current, &memo, false)),
            None if granularity >= current.len() => break,
            None => granularity = (granularity * 2).min(current.len()),
        }
    }
    Ok(done(current, &memo, true))
}

/// `items` cut into `parts` runs of nearly equal length, in order.
fn split(items: &[usize], parts: usize) -> Vec<Vec<usize>> {
    let len = items.len();
    (0..parts)
        .map(|i| items[i * len / parts..(i + 1) * len / parts].to_vec())
        .filter(|c| !c.is_empty())
        .collect()
}

/// The index of the first candidate that fails. Unknown candidates are tested up to
/// `batch` at a time, in order, stopping at one known to fail, and at `limit` tests in
/// all; every answer is kept.
fn first_failing<E>(
    candidates: &[Vec<usize>],
    batch: usize,
    limit: usize,
    memo: &mut HashMap<Vec<usize>, bool>,
    test: &mut Test<E>,
) -> Result<Option<usize>, E> {
    let mut next = 0;
    loop {
        while next < candidates.len() && memo.get(&candidates[next]) == Some(&false) {
            next += 1;
        }
        match candidates.get(next).map(|c| memo.get(c)) {
            None => return Ok(None),
            Some(Some(true)) => return Ok(Some(next)),
            _ => {}
        }
        let room = limit.saturating_sub(memo.len() - 1).min(batch.max(1));
        if room == 0 {
            return Ok(None);
        }
        let mut sets: Vec<Vec<usize>> = Vec::new();
        for c in &candidates[next..] {
            match memo.get(c) {
                Some(true) => break,
                Some(false) => {}
                None if sets.contains(c) => {}
                None => sets.push(c.clone()),
            }
            if sets.len() >= room {
                break;
            }
        }
        let answers = test(&sets)?;
        for (set, failed) in sets.into_iter().zip(answers) {
            memo.insert(set, failed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ddmin over `n` elements with a pure predicate, `batch` candidates at a time.
    fn reduce(n: usize, batch: usize, fails: impl Fn(&[usize]) -> bool) -> Reduced {
        let mut test = |sets: &[Vec<usize>]| -> Result<Vec<bool>, ()> {
            Ok(sets.iter().map(|s| fails(s)).collect())
        };
        ddmin(n, batch, usize::MAX, &mut test).unwrap()
    }

    #[test]
    fn finds_the_two_elements_that_must_coincide() {
        let fails = |s: &[usize]| s.contains(&3) && s.contains(&7);
        for batch in [1, 2, 3, 8] {
            assert_eq!(reduce(10, batch, fails).kept, vec![3, 7], "batch {batch}");
        }
    }

    #[test]
    fn finds_one_element_and_an_empty_set_when_none_is_needed() {
        assert_eq!(reduce(9, 1, |s| s.contains(&5)).kept, vec![5]);
        let none = reduce(9, 2, |_| true);
        assert_eq!(none.kept, Vec::<usize>::new());
        assert_eq!(none.tests, 1, "only the empty set was tested");
        assert_eq!(reduce(0, 1, |_| true).kept, Vec::<usize>::new());
    }

    #[test]
    fn the_result_is_one_minimal_and_independent_of_the_batch() {
        // Fails when at least two of {1, 4, 6, 9} are present and 2 is too.
        let fails = |s: &[usize]| {
            s.contains(&2) && [1, 4, 6, 9].iter().filter(|i| s.contains(i)).count() >= 2
        };
        let one = reduce(12, 1, fails);
        assert!(fails(&one.kept));
        assert_eq!(one.kept.len(), 3, "{one:?}");
        for i in 0..one.kept.len() {
            let mut less = one.kept.clone();
            less.remove(i);
            assert!(!fails(&less), "{less:?} still fails: not 1-minimal");
        }
        for batch in [2, 4, 16] {
            assert_eq!(reduce(12, batch, fails).kept, one.kept, "batch {batch}");
        }
    }

    #[test]
    fn a_test_limit_stops_with_a_failing_subset() {
        let fails = |s: &[usize]| s.contains(&3) && s.contains(&7);
        let full = reduce(10, 1, fails);
        assert!(full.complete && full.tests > 8, "{full:?}");
        for batch in [1, 3] {
            let mut count = 0;
            let mut test = |sets: &[Vec<usize>]| -> Result<Vec<bool>, ()> {
                count += sets.len();
                Ok(sets.iter().map(|s| fails(s)).collect())
            };
            let cut = ddmin(10, batch, 8, &mut test).unwrap();
            assert_eq!((cut.tests, count, cut.complete), (8, 8, false), "{cut:?}");
            assert!(fails(&cut.kept) && cut.kept.len() < 10, "{cut:?}");
        }
    }

    #[test]
    fn errors_of_the_test_stop_the_search() {
        let mut test = |_: &[Vec<usize>]| -> Result<Vec<bool>, String> { Err("boom".into()) };
        assert_eq!(ddmin(4, 1, 10, &mut test), Err("boom".to_string()));
    }
}
