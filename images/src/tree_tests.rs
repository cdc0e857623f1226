//! Layer semantics, checked on tars built in memory.

use super::*;

fn tar(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
    // (path, None) is a file holding its own path; (path/, None) a folder; (path, Some(t)) a hard link.
    let mut b = tar::Builder::new(Vec::new());
    for (path, link) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        match (path.ends_with('/'), link) {
            (true, _) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, path, std::io::empty()).unwrap();
            }
            (false, Some(target)) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                b.append_link(&mut h, path, target).unwrap();
            }
            (false, None) => {
                h.set_size(path.len() as u64);
                b.append_data(&mut h, path, path.as_bytes()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn apply(layers: &[Vec<u8>]) -> Tree {
    let mut tree = Tree::default();
    for (i, l) in layers.iter().enumerate() {
        tree.apply(i, &format!("layer{i}"), &l[..]).unwrap();
    }
    tree
}

fn paths(tree: &Tree) -> Vec<&str> {
    tree.nodes.keys().map(String::as_str).collect()
}

#[test]
fn whiteout_hides_a_whole_subtree_of_lower_layers_only() {
    let lower = tar(&[("a/", None), ("a/b/", None), ("a/b/c", None), ("ab", None)]);
    // The whiteout comes after a same-layer entry of the same name: that entry stays. A
    // whiteout in a folder that does not exist hides nothing and creates nothing.
    let upper = tar(&[
        ("a/", None),
        ("a/new", None),
        ("a/.wh.b", None),
        ("x/.wh.none", None),
    ]);
    let tree = apply(&[lower, upper]);
    assert_eq!(paths(&tree), ["a", "a/new", "ab"]);
}

#[test]
fn opaque_directory_keeps_its_own_layer_whatever_the_order() {
    let lower = tar(&[
        ("d/", None),
        ("d/old", None),
        ("d/sub/", None),
        ("d/sub/f", None),
        ("e", None),
    ]);
    let upper = tar(&[("d/", None), ("d/new", None), ("d/.wh..wh..opq", None)]);
    assert_eq!(paths(&apply(&[lower, upper])), ["d", "d/new", "e"]);
}

#[test]
fn file_over_folder_replaces_it_and_folder_over_folder_keeps_children() {
    let lower = tar(&[("f/", None), ("f/x", None), ("g/", None), ("g/y", None)]);
    let upper = tar(&[("f", None), ("g/", None)]);
    let tree = apply(&[lower, upper]);
    assert_eq!(paths(&tree), ["f", "g", "g/y"]);
    assert!(matches!(tree.nodes["f"].kind, Kind::File(_)));
}

#[test]
fn hard_links_share_an_inode_until_one_path_is_replaced() {
    let lower = tar(&[("a", None), ("b", Some("a"))]);
    let tree = apply(std::slice::from_ref(&lower));
    assert_eq!(tree.nodes["a"].inode, tree.nodes["b"].inode);
    let upper = tar(&[("a", None)]);
    let tree = apply(&[lower, upper]);
    assert_ne!(tree.nodes["a"].inode, tree.nodes["b"].inode);
    assert_eq!(
        tree.nodes["b"].kind,
        Kind::File(DataRef {
            layer: 0,
            offset: 512,
            size: 1
        })
    );
}

#[test]
fn clean_path_strips_dots_and_slashes_and_refuses_dot_dot() {
    assert_eq!(clean_path("./a//b/"), Ok(Some("a/b".into())));
    assert_eq!(clean_path("/etc/passwd"), Ok(Some("etc/passwd".into())));
    assert_eq!(clean_path("./"), Ok(None));
    assert!(clean_path("a/../../b").is_err());
}
