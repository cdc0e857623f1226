// The committed inputs of a fuzz target, for the replay tests (docs/fuzzing.md): seeds
// (`seed-*`; `seed-bad-*` are seeds that must be refused) and reproducers of fixed crashes
// (`crash-*`) from fuzz/corpus/TARGET/. What a local fuzz run added there is left out.

use std::path::Path;

pub struct Input {
    pub name: String,
    pub data: Vec<u8>,
}

impl Input {
    /// A seed that the parser must accept (every other input only must not panic).
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
        let outcome = run(&input.data);
        if input.must_be_accepted() {
            if let Err(e) = outcome {
                panic!("{target}: seed {} is refused: {e}", input.name);
            }
        }
    }
}
