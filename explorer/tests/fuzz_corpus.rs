//! The compose and fault-plan fuzz seeds and crash reproducers (fuzz/corpus/compose/,
//! fuzz/corpus/fault_plan/), replayed through the fuzz targets' own harnesses, so a
//! regression fails `cargo test` without a fuzzer (docs/fuzzing.md).

mod compose_harness {
    include!("../../fuzz/harness/compose.rs");
}
mod fault_plan_harness {
    include!("../../fuzz/harness/fault_plan.rs");
}
mod corpus {
    include!("../../fuzz/harness/corpus.rs");
}

#[test]
fn compose_corpus_replays() {
    corpus::replay("compose", compose_harness::run);
}

#[test]
fn fault_plan_corpus_replays() {
    corpus::replay("fault_plan", fault_plan_harness::run);
}
