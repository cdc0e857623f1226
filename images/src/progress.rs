//! Progress of long image work (debootstrap, packing layers, compressing root
//! filesystems). With the `progress` feature (the `detvm` CLI turns it on) these are
//! indicatif's bars on stderr; without it (the engine library, the notebook) they draw
//! nothing, so a library user's process never gets terminal output from here.

#[cfg(feature = "progress")]
pub use indicatif::{ProgressBar, ProgressStyle};

#[cfg(not(feature = "progress"))]
pub use quiet::{ProgressBar, ProgressStyle};

#[cfg(not(feature = "progress"))]
mod quiet {
    use std::time::Duration;

    /// Draws nothing.
    #[derive(Debug, Clone, Default)]
    pub struct ProgressBar;

    /// Templates are accepted and ignored.
    #[derive(Debug, Clone, Default)]
    pub struct ProgressStyle;

    impl ProgressStyle {
        pub fn with_template(_: &str) -> Result<ProgressStyle, std::convert::Infallible> {
            Ok(ProgressStyle)
        }
        pub fn default_bar() -> ProgressStyle {
            ProgressStyle
        }
        pub fn default_spinner() -> ProgressStyle {
            ProgressStyle
        }
    }

    impl ProgressBar {
        pub fn new(_total: u64) -> ProgressBar {
            ProgressBar
        }
        pub fn new_spinner() -> ProgressBar {
            ProgressBar
        }
        pub fn with_message(self, _: String) -> ProgressBar {
            self
        }
        pub fn set_style(&self, _: ProgressStyle) {}
        pub fn set_message(&self, _: String) {}
        pub fn enable_steady_tick(&self, _: Duration) {}
        pub fn finish_and_clear(&self) {}
        pub fn wrap_read<R: std::io::Read>(&self, read: R) -> R {
            read
        }
    }
}
