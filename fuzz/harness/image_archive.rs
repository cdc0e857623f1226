// Fuzz harness, shared by fuzz/fuzz_targets/image_archive.rs and the replay test
// images/tests/fuzz_corpus.rs. The input is an archive `detvm image load` is given (a
// `docker save` tar, an OCI archive, either gzip-compressed or not), imported into an
// empty store; what imports must then resolve and list. Accepted: it imported.

use detvm_images::Store;

pub fn run(data: &[u8]) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let archive = dir.path().join("image.tar");
    std::fs::write(&archive, data).expect("writing the archive");
    let store = Store::open(dir.path().join("store")).expect("an empty store");
    match store.load(&archive) {
        Ok(images) => {
            for image in &images {
                if let Err(e) = store.resolve(&image.digest) {
                    panic!("imported {} does not resolve: {e}", image.digest);
                }
            }
            store.list().expect("the store lists what it imported");
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}
