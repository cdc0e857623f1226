//! The engine's observer for a terminal: a progress bar of virtual time on stderr when
//! stderr is a terminal, and the engine's notes and warnings as lines on stderr.

use std::time::Duration;

use explorer::observer::Observer;

pub struct Terminal {
    prefix: &'static str,
    bar: indicatif::ProgressBar,
}

impl Terminal {
    /// `duration`: the driver phase, when the user gave one (the bar's length).
    pub fn new(prefix: &'static str, duration: Option<Duration>) -> Terminal {
        let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let bar = match duration {
                Some(d) => indicatif::ProgressBar::new(d.as_millis() as u64),
                None => indicatif::ProgressBar::new_spinner(),
            };
            let template = match duration {
                Some(_) => "{spinner} virtual {pos}/{len} ms [{bar:30}] {msg} ({elapsed} wall)",
                None => "{spinner} virtual {pos} ms {msg} ({elapsed} wall)",
            };
            bar.set_style(
                indicatif::ProgressStyle::with_template(template)
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        Terminal { prefix, bar }
    }

    pub fn done(&self) {
        self.bar.finish_and_clear();
    }
}

impl Observer for Terminal {
    fn progress(&mut self, vtime_ns: u64, phase: &str) {
        self.bar.set_position(vtime_ns / 1_000_000);
        self.bar.set_message(phase.to_string());
    }

    fn warning(&mut self, message: &str) {
        self.bar.suspend(|| eprintln!("warning: {message}"));
    }

    fn info(&mut self, message: &str) {
        let prefix = self.prefix;
        self.bar.suspend(|| eprintln!("{prefix}: {message}"));
    }
}
