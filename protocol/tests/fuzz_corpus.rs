//! The agent channel's fuzz seeds and crash reproducers (fuzz/corpus/agent_channel/),
//! replayed through the fuzz target's own harness, so a regression fails `cargo test`
//! without a fuzzer (docs/fuzzing.md).

mod harness {
    include!("../../fuzz/harness/agent_channel.rs");
}
mod corpus {
    include!("../../fuzz/harness/corpus.rs");
}

#[test]
fn agent_channel_corpus_replays() {
    corpus::replay("agent_channel", harness::run);
}
