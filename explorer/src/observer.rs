//! How the engine reports while it works. The engine never prints: whoever drives it
//! (the `detvm` CLI, the notebook, a campaign worker) passes an [`Observer`] and decides
//! what to show.

use crate::store::StoredEvent;

pub trait Observer {
    /// The events one runner step produced, in order. An error ends the run as an
    /// infrastructure error (the journal returns one when it cannot write).
    fn events(&mut self, _batch: &[StoredEvent]) -> Result<(), String> {
        Ok(())
    }
    /// Virtual time after a runner step and the run's phase (`setup`, `drivers`, …).
    fn progress(&mut self, _vtime_ns: u64, _phase: &str) {}
    /// Something the user should fix or know (a tolerated compose key, an exec that
    /// could not be sent).
    fn warning(&mut self, _message: &str) {}
    /// What the engine is doing (run started, fault plan, snapshot written).
    fn info(&mut self, _message: &str) {}
}

/// Sees nothing: for callers that only want the returned values.
pub struct Quiet;

impl Observer for Quiet {}

/// Two observers, each told everything; the first error wins.
pub struct Both<'a, 'b>(pub &'a mut dyn Observer, pub &'b mut dyn Observer);

impl Observer for Both<'_, '_> {
    fn events(&mut self, batch: &[StoredEvent]) -> Result<(), String> {
        let a = self.0.events(batch);
        let b = self.1.events(batch);
        a.and(b)
    }
    fn progress(&mut self, vtime_ns: u64, phase: &str) {
        self.0.progress(vtime_ns, phase);
        self.1.progress(vtime_ns, phase);
    }
    fn warning(&mut self, message: &str) {
        self.0.warning(message);
        self.1.warning(message);
    }
    fn info(&mut self, message: &str) {
        self.0.info(message);
        self.1.info(message);
    }
}
