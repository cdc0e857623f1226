//! The image-archive fuzz seeds and crash reproducers (fuzz/corpus/image_archive/),
//! replayed through the fuzz target's own harness, so a regression fails `cargo test`
//! without a fuzzer (docs/fuzzing.md).

mod harness {
    include!("../../fuzz/harness/image_archive.rs");
}
mod corpus {
    include!("../../fuzz/harness/corpus.rs");
}

#[test]
fn image_archive_corpus_replays() {
    corpus::replay("image_archive", harness::run);
}
