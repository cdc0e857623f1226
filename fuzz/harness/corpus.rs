// The committed inputs of a fuzz target, for the replay tests (docs/fuzzing.md), from
// fuzz/corpus/TARGET/: seeds (`seed-*`), which must be accepted, malformed seeds
// (`seed-bad-*`) and reproducers of fixed crashes (`crash-*`), which must be refused; none
// may panic. Refusal is checked too because a test build has no overflow checks: there an
// overflow that panicked under the fuzzer wraps silently and the input may pass as valid.
// What a local fuzz run added to the folder is left out.

use std::path::Path;

pub struct Input {
    pub name: String,
    pub data: Vec<u8>,
}

impl Input {
    /// A seed that the parser must accept; every other input must be refused.
    pub fn must_be_accepted(&self) -> bool {
        self.name.starts_with("seed-") && !self.name.starts_with("seed-bad-")
    }
}

pub fn committed(target: &str) -> Vec<Input> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<Input> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.to_string();
            (name.starts_with("seed-") || name.starts_with("crash-")).then(|| Input {
                data: std::fs::read(&path).expect("a corpus file"),
                name,
            })
        })
        .collect();
    inputs.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(!inputs.is_empty(), "{} has no seeds", dir.display());
    inputs
}

/// Runs every committed input of `target` through `run` (the fuzz target's own code),
/// which says whether the input was accepted or why not.
pub fn replay(target: &str, run: impl Fn(&[u8]) -> Result<(), String>) {
    for input in committed(target) {
        println!("{target}: {}", input.name);
        match (input.must_be_accepted(), run(&input.data)) {
            (true, Err(e)) => panic!("{target}: seed {} is refused: {e}", input.name),
            (false, Ok(())) => panic!("{target}: {} is accepted; it must be refused", input.name),
            _ => {}
        }
    }
}
