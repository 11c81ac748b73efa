//! The proof code against the published RFC 9162 test vectors (transparency-dev, in
//! `tests/vectors/rfc9162`), and property tests: every valid proof verifies, every mutated one
//! fails.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ledger_audit::{
    Hash, MemoryTree, consistency_proof, inclusion_proof, leaf_hash, root, verify_consistency,
    verify_inclusion,
};
use proptest::prelude::*;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InclusionCase {
    leaf_idx: u64,
    tree_size: u64,
    root: String,
    leaf_hash: String,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

#[derive(Debug, Deserialize)]
struct ConsistencyCase {
    size1: u64,
    size2: u64,
    root1: String,
    root2: String,
    proof: Option<Vec<String>>,
    desc: String,
    #[serde(rename = "wantErr")]
    want_err: bool,
}

fn vector_files(kind: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|e| e == "json") {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/vectors/rfc9162")
            .join(kind),
        &mut files,
    );
    files.sort();
    files
}

fn bytes(b64: &str) -> Vec<u8> {
    BASE64.decode(b64).unwrap()
}

#[test]
fn inclusion_vectors() {
    let files = vector_files("inclusion");
    assert!(files.len() > 50, "the vectors are missing");
    for file in files {
        let case: InclusionCase =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let proof: Vec<Vec<u8>> = case
            .proof
            .unwrap_or_default()
            .iter()
            .map(|p| bytes(p))
            .collect();
        let result = verify_inclusion(
            case.leaf_idx,
            case.tree_size,
            &bytes(&case.leaf_hash),
            &proof,
            &bytes(&case.root),
        );
        assert_eq!(
            result.is_err(),
            case.want_err,
            "{}: {} gave {result:?}",
            file.display(),
            case.desc
        );
    }
}

#[test]
fn consistency_vectors() {
    let files = vector_files("consistency");
    assert!(files.len() > 50, "the vectors are missing");
    for file in files {
        let case: ConsistencyCase =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let proof: Vec<Vec<u8>> = case
            .proof
            .unwrap_or_default()
            .iter()
            .map(|p| bytes(p))
            .collect();
        let result = verify_consistency(
            case.size1,
            case.size2,
            &proof,
            &bytes(&case.root1),
            &bytes(&case.root2),
        );
        assert_eq!(
            result.is_err(),
            case.want_err,
            "{}: {} gave {result:?}",
            file.display(),
            case.desc
        );
    }
}

/// The happy-path vectors also pin our proof generation: the tree of the vectors has leaves
/// D[i] = the byte strings of RFC 6962's test data, whose hashes the vectors give; we rebuild the
/// same proofs from the same leaf hashes.
#[test]
fn generated_proofs_match_the_vectors() {
    // transparency-dev's test leaves.
    let leaves: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x00],
        vec![0x10],
        vec![0x20, 0x21],
        vec![0x30, 0x31],
        vec![0x40, 0x41, 0x42, 0x43],
        vec![0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
        vec![
            0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d,
            0x6e, 0x6f,
        ],
    ];
    let tree = MemoryTree::new(leaves.iter().map(|l| leaf_hash(l)).collect());
    let mut compared = 0;
    for file in vector_files("inclusion")
        .into_iter()
        .filter(|f| f.ends_with("happy-path.json"))
    {
        let case: InclusionCase =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        if case.tree_size > 8 {
            continue;
        }
        let proof = inclusion_proof(&tree, case.leaf_idx, case.tree_size).unwrap();
        let expected: Vec<Vec<u8>> = case
            .proof
            .unwrap_or_default()
            .iter()
            .map(|p| bytes(p))
            .collect();
        assert_eq!(
            proof.iter().map(|h| h.to_vec()).collect::<Vec<_>>(),
            expected,
            "{}",
            file.display()
        );
        assert_eq!(
            root(&tree, case.tree_size).unwrap().to_vec(),
            bytes(&case.root)
        );
        compared += 1;
    }
    for file in vector_files("consistency")
        .into_iter()
        .filter(|f| f.ends_with("happy-path.json"))
    {
        let case: ConsistencyCase =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        if case.size2 > 8 {
            continue;
        }
        let proof = consistency_proof(&tree, case.size1, case.size2).unwrap();
        let expected: Vec<Vec<u8>> = case
            .proof
            .unwrap_or_default()
            .iter()
            .map(|p| bytes(p))
            .collect();
        assert_eq!(
            proof.iter().map(|h| h.to_vec()).collect::<Vec<_>>(),
            expected,
            "{}",
            file.display()
        );
        compared += 1;
    }
    assert!(compared >= 8, "only {compared} vectors were compared");
}

fn tree_of(n: u64) -> MemoryTree {
    MemoryTree::new(
        (0..n)
            .map(|i| leaf_hash(format!("event {i}").as_bytes()))
            .collect(),
    )
}

/// One way to spoil a proof.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit { hash: usize, bit: usize },
    DropHash(usize),
    AddHash,
    WrongIndex(u64),
    WrongSize(u64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0..256usize).prop_map(|(hash, bit)| Mutation::FlipBit { hash, bit }),
        any::<usize>().prop_map(Mutation::DropHash),
        Just(Mutation::AddHash),
        (1..64u64).prop_map(Mutation::WrongIndex),
        (1..64u64).prop_map(Mutation::WrongSize),
    ]
}

/// Applies a mutation of the hashes to `proof`; `None` when there is nothing to mutate.
fn mutate_hashes(mutation: &Mutation, mut proof: Vec<Hash>) -> Option<Vec<Hash>> {
    match *mutation {
        Mutation::FlipBit { hash, bit } if !proof.is_empty() => {
            let n = proof.len();
            proof[hash % n][bit / 8] ^= 1 << (bit % 8);
        }
        Mutation::DropHash(i) if !proof.is_empty() => {
            let n = proof.len();
            proof.remove(i % n);
        }
        Mutation::AddHash => proof.push([0x5a; 32]),
        _ => return None,
    }
    Some(proof)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn inclusion_proofs_verify_and_mutations_fail(size in 1..200u64, index in any::<u64>(), m in mutation()) {
        let index = index % size;
        let tree = tree_of(size);
        let root = root(&tree, size).unwrap();
        let leaf = leaf_hash(format!("event {index}").as_bytes());
        let proof = inclusion_proof(&tree, index, size).unwrap();
        prop_assert!(verify_inclusion(index, size, &leaf, &proof, &root).is_ok());
        match m {
            // The same proof, claimed for another leaf of the same tree.
            Mutation::WrongIndex(delta) if size > 1 => {
                let other = (index + delta % (size - 1) + 1) % size;
                prop_assert!(verify_inclusion(other, size, &leaf, &proof, &root).is_err());
            }
            // The same proof, claimed for a larger tree (checked against that tree's root).
            Mutation::WrongSize(delta) => {
                let larger = tree_of(size + delta);
                let larger_root = ledger_audit::root(&larger, size + delta).unwrap();
                prop_assert!(verify_inclusion(index, size + delta, &leaf, &proof, &larger_root).is_err());
            }
            _ => {
                if let Some(bad) = mutate_hashes(&m, proof) {
                    prop_assert!(verify_inclusion(index, size, &leaf, &bad, &root).is_err(), "{m:?} still verified");
                }
            }
        }
    }

    #[test]
    fn consistency_proofs_verify_and_mutations_fail(new in 1..200u64, old in any::<u64>(), m in mutation()) {
        let old = 1 + old % new;
        let tree = tree_of(new);
        let (old_root, new_root) = (root(&tree, old).unwrap(), root(&tree, new).unwrap());
        let proof = consistency_proof(&tree, old, new).unwrap();
        prop_assert!(verify_consistency(old, new, &proof, &old_root, &new_root).is_ok());
        match m {
            // The same proof, claimed from another old size (with that size's true root).
            Mutation::WrongIndex(delta) if new > 1 => {
                let other = 1 + (old - 1 + delta % (new - 1) + 1) % new;
                if other != old && other < new {
                    let other_root = ledger_audit::root(&tree, other).unwrap();
                    prop_assert!(verify_consistency(other, new, &proof, &other_root, &new_root).is_err());
                }
            }
            // The same proof, claimed up to a larger tree (with that tree's root).
            Mutation::WrongSize(delta) => {
                let larger = tree_of(new + delta);
                let larger_root = ledger_audit::root(&larger, new + delta).unwrap();
                prop_assert!(verify_consistency(old, new + delta, &proof, &old_root, &larger_root).is_err());
            }
            _ => {
                if let Some(bad) = mutate_hashes(&m, proof) {
                    prop_assert!(verify_consistency(old, new, &bad, &old_root, &new_root).is_err(), "{m:?} still verified");
                }
            }
        }
    }

    #[test]
    fn a_changed_leaf_breaks_consistency_with_the_old_root(size in 2..120u64, changed in any::<u64>()) {
        let changed = changed % size;
        let honest = tree_of(size);
        let mut leaves: Vec<Hash> = (0..size).map(|i| leaf_hash(format!("event {i}").as_bytes())).collect();
        leaves[changed as usize] = leaf_hash(b"rewritten");
        let rewritten = MemoryTree::new(leaves);
        let old = changed + 1;
        let old_root = root(&honest, old).unwrap();
        let proof = consistency_proof(&rewritten, old, size).unwrap();
        let new_root = root(&rewritten, size).unwrap();
        prop_assert!(verify_consistency(old, size, &proof, &old_root, &new_root).is_err());
    }
}
