//! Exit codes of `detvm run`, `check`, `replay` (docs/runs.md).

use explorer::run::RunError;
use explorer::store::RunStatus;

pub const PASSED: u8 = 0;
pub const PROPERTIES_FAILED: u8 = 1;
pub const SETUP_FAILED: u8 = 2;
pub const INFRASTRUCTURE: u8 = 3;
pub const BAD_INPUT: u8 = 4;
pub const DRIVER_HUNG: u8 = 5;
/// `detvm check`: runs with one seed differed; `detvm replay`: the replay differed.
pub const NOT_DETERMINISTIC: u8 = 6;
pub const INTERRUPTED: u8 = 130;

pub fn of_status(status: RunStatus) -> u8 {
    match status {
        RunStatus::Passed => PASSED,
        RunStatus::PropertiesFailed => PROPERTIES_FAILED,
        RunStatus::SetupFailed => SETUP_FAILED,
        RunStatus::InfrastructureError | RunStatus::Running => INFRASTRUCTURE,
        RunStatus::DriverHung => DRIVER_HUNG,
        RunStatus::Interrupted => INTERRUPTED,
    }
}

pub fn of_error(e: &RunError) -> u8 {
    match e {
        RunError::Input(_) => BAD_INPUT,
        RunError::Setup(_) => SETUP_FAILED,
        RunError::Infrastructure(_) => INFRASTRUCTURE,
    }
}
