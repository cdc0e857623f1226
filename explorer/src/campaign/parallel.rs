//! Work spread over a few threads: each takes the next item as soon as it is free, so
//! items of uneven length (branches that end early, branches that are judged) keep every
//! thread busy; results come back in item order, so the order never depends on timing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

/// Runs `work` on every item on up to `jobs` threads; `done` sees each result as it
/// comes (on this thread, so it may report). Results in item order.
pub fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    work: impl Fn(&T) -> R + Sync,
    mut done: impl FnMut(usize, &R),
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1).min(items.len()) {
            let (tx, next, work) = (tx.clone(), &next, &work);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= items.len() || tx.send((i, work(&items[i]))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut out: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
        for (i, r) in rx {
            done(i, &r);
            out[i] = Some(r);
        }
        out.into_iter()
            .map(|r| r.expect("every item ran"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::in_parallel;

    #[test]
    fn results_keep_the_items_order() {
        let items: Vec<u64> = (0..23).collect();
        let mut seen = 0;
        let out = in_parallel(&items, 3, |&i| i * i, |_, _| seen += 1);
        assert_eq!(out, items.iter().map(|i| i * i).collect::<Vec<_>>());
        assert_eq!(seen, 23);
    }
}
