//! `dialogue-ledger verify`: replays a tenant's whole log from a server, recomputes every leaf and
//! the root, checks the signed checkpoint, and checks that the log extends a checkpoint saved
//! earlier. Trusts nothing the server says without a proof: a mismatch is located with
//! consistency proofs against the signed root.

use std::path::PathBuf;

use anyhow::Context;
use ledger_audit::{
    Checkpoint, Frontier, Hash, MemoryTree, NoteVerifier, leaf_bytes, leaf_hash, verify_consistency,
};
use ledger_proto::v1 as api;
use ledger_proto::v1::ledger_client::LedgerClient;
use ledger_store::EventStore;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// What to verify, and against what.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The server's gRPC URL, such as `http://127.0.0.1:50051`.
    pub server: String,
    /// How to meet the server over TLS (`https://`).
    pub tls: crate::operator::ClientTls,
    /// A bearer token of an auditor (or admin) of the tenant.
    pub token: String,
    /// The checkpoint verifier key (`dialogue-ledger checkpoint-key` prints it).
    pub key: String,
    /// A checkpoint saved earlier, which the log must extend.
    pub saved: Option<PathBuf>,
    /// Where to save the newly verified checkpoint.
    pub save: Option<PathBuf>,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
}

/// The outcome: every check passed, or the first that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every check passed; `checks` says what the recomputed tree was found to match.
    Verified {
        origin: String,
        leaves: u64,
        root: Hash,
        checks: Vec<String>,
    },
    Failed {
        reason: String,
        first_bad_leaf: Option<u64>,
    },
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use base64::Engine;
        match self {
            Self::Verified {
                origin,
                leaves,
                root,
                checks,
            } => {
                let root = base64::engine::general_purpose::STANDARD.encode(root);
                let checks = checks.join("; ");
                write!(
                    f,
                    "VERIFIED {origin}: {leaves} leaves recomputed, root {root}; {checks}"
                )
            }
            Self::Failed {
                reason,
                first_bad_leaf: Some(index),
            } => {
                write!(f, "FAILED: {reason}; first bad leaf index {index}")
            }
            Self::Failed {
                reason,
                first_bad_leaf: None,
            } => write!(f, "FAILED: {reason}"),
        }
    }
}

type Client = LedgerClient<InterceptedService<Channel, Bearer>>;

/// Adds the bearer token to every request.
#[derive(Debug, Clone)]
pub(crate) struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Bearer {
    pub(crate) fn new(token: &str) -> anyhow::Result<Self> {
        Ok(Self(
            format!("Bearer {token}")
                .parse()
                .context("malformed token")?,
        ))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

fn failed(reason: impl Into<String>, first_bad_leaf: Option<u64>) -> Verdict {
    Verdict::Failed {
        reason: reason.into(),
        first_bad_leaf,
    }
}

/// Runs every check. `Err` means the verification could not be carried out (the server is
/// unreachable, the key is malformed); a failed check is `Ok(Verdict::Failed)`.
pub async fn verify(options: &VerifyOptions) -> anyhow::Result<Verdict> {
    let verifier = NoteVerifier::parse(&options.key).context("malformed verifier key")?;
    let bearer = Bearer::new(&options.token)?;
    let channel = crate::operator::connect(&options.server, &options.tls).await?;
    let mut client =
        LedgerClient::with_interceptor(channel, bearer).max_decoding_message_size(64 << 20);

    let signed = client
        .get_checkpoint(api::GetCheckpointRequest {})
        .await?
        .into_inner();
    let checkpoint = match verifier.verify(&signed.note) {
        Ok(checkpoint) => checkpoint,
        Err(error) => {
            return Ok(failed(
                format!("the server's checkpoint does not verify: {error}"),
                None,
            ));
        }
    };
    let saved = match &options.saved {
        None => None,
        Some(path) => {
            let note = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            match verifier.verify(&note) {
                Ok(saved) if saved.origin == checkpoint.origin => Some(saved),
                Ok(saved) => {
                    return Ok(failed(
                        format!("the saved checkpoint is of another log ({})", saved.origin),
                        None,
                    ));
                }
                Err(error) => {
                    return Ok(failed(
                        format!("the saved checkpoint does not verify: {error}"),
                        None,
                    ));
                }
            }
        }
    };

    let leaves = replay(&mut client, checkpoint.size, options.progress).await?;
    let mut frontier = Frontier::default();
    for (index, leaf) in leaves.iter().enumerate() {
        if let Err(reason) = leaf {
            return Ok(failed(reason.clone(), Some(index as u64)));
        }
        frontier.push(*leaf.as_ref().expect("checked above"));
    }
    let leaves: Vec<Hash> = leaves
        .into_iter()
        .map(|leaf| leaf.expect("checked above"))
        .collect();
    if (leaves.len() as u64) < checkpoint.size || frontier.root() != checkpoint.root {
        let reason = if (leaves.len() as u64) < checkpoint.size {
            format!(
                "the log has {} events, the checkpoint {}",
                leaves.len(),
                checkpoint.size
            )
        } else {
            "the recomputed root differs from the signed checkpoint".to_owned()
        };
        let first_bad = first_bad_leaf(&mut client, &leaves, &checkpoint).await?;
        return Ok(failed(reason, Some(first_bad)));
    }

    let mut checks = vec!["matches the signed checkpoint".to_owned()];
    if let Some(saved) = saved {
        if saved.size > checkpoint.size {
            return Ok(failed(
                format!(
                    "the log shrank from {} to {} leaves",
                    saved.size, checkpoint.size
                ),
                None,
            ));
        }
        if root_of(&leaves, saved.size) != saved.root {
            return Ok(failed(
                "the log no longer matches the saved checkpoint",
                None,
            ));
        }
        if !consistent(&mut client, saved.size, saved.root, &checkpoint).await? {
            return Ok(failed(
                "no valid consistency proof from the saved checkpoint to the current one",
                None,
            ));
        }
        checks.push(format!(
            "consistent with the saved checkpoint of {} leaves",
            saved.size
        ));
    }
    if let Some(path) = &options.save {
        std::fs::write(path, &signed.note)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(Verdict::Verified {
        origin: checkpoint.origin,
        leaves: checkpoint.size,
        root: checkpoint.root,
        checks,
    })
}

/// Replays the first `size` leaves, recomputing each leaf hash from the event's fields. An event
/// whose leaf index is not the next one becomes an `Err` at that place.
async fn replay(
    client: &mut Client,
    size: u64,
    progress: bool,
) -> anyhow::Result<Vec<Result<Hash, String>>> {
    let bar = crate::operator::progress_bar(progress, size, crate::operator::EVENTS_BAR);
    let mut events = client
        .replay_all(api::ReplayAllRequest { from_leaf_index: 0 })
        .await?
        .into_inner();
    let mut leaves = Vec::with_capacity(size as usize);
    while (leaves.len() as u64) < size {
        let Some(event) = events.message().await? else {
            break;
        };
        let index = leaves.len() as u64;
        let leaf = match (
            event.leaf_index == index,
            <[u8; 16]>::try_from(event.event_id.as_slice()),
        ) {
            (false, _) => Err(format!(
                "the server sent leaf {} where {index} was due",
                event.leaf_index
            )),
            (_, Err(_)) => Err("an event id is not 16 bytes".to_owned()),
            (true, Ok(id)) => Ok(leaf_hash(&leaf_bytes(
                &event.stream,
                event.revision,
                &id,
                &event.event_type,
                event.recorded_at_micros,
                &event.metadata,
                &event.payload,
            ))),
        };
        leaves.push(leaf);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(leaves)
}

fn root_of(leaves: &[Hash], size: u64) -> Hash {
    let tree = MemoryTree::new(leaves[..size as usize].to_vec());
    ledger_audit::root(&tree, size).expect("an in-memory tree has every subtree")
}

/// Whether the tree of `size` leaves with `root` is a prefix of the checkpoint's tree, by a
/// consistency proof from the server.
async fn consistent(
    client: &mut Client,
    size: u64,
    root: Hash,
    checkpoint: &Checkpoint,
) -> anyhow::Result<bool> {
    if size == checkpoint.size {
        return Ok(root == checkpoint.root);
    }
    let request = api::GetConsistencyProofRequest {
        old_size: size,
        new_size: checkpoint.size,
    };
    let proof = client.get_consistency_proof(request).await?.into_inner();
    Ok(verify_consistency(
        size,
        checkpoint.size,
        &proof.hashes,
        &root,
        &checkpoint.root,
    )
    .is_ok())
}

/// The index of the first recomputed leaf that the signed tree does not contain: the smallest
/// prefix of the recomputed leaves that is not consistent with the checkpoint ends with it.
async fn first_bad_leaf(
    client: &mut Client,
    leaves: &[Hash],
    checkpoint: &Checkpoint,
) -> anyhow::Result<u64> {
    let mut good = 0;
    let mut bad = (leaves.len() as u64).min(checkpoint.size);
    if bad == 0 || consistent(client, bad, root_of(leaves, bad), checkpoint).await? {
        // Every leaf the log still has is right: the next one is missing.
        return Ok(bad);
    }
    while bad - good > 1 {
        let middle = good + (bad - good) / 2;
        if consistent(client, middle, root_of(leaves, middle), checkpoint).await? {
            good = middle;
        } else {
            bad = middle;
        }
    }
    Ok(bad - 1)
}

/// What to verify offline: a stopped server's data directory (or a copy of it).
#[derive(Debug, Clone)]
pub struct OfflineOptions {
    pub data_dir: PathBuf,
    pub tenant: String,
    /// The checkpoint verifier key, to check a saved checkpoint.
    pub key: String,
    /// A checkpoint saved earlier, which the log must extend.
    pub saved: Option<PathBuf>,
}

/// Recomputes the tenant's tree from the data directory's event log and checks it against the
/// stored audit tree and a saved checkpoint. The server must not be running on the directory.
pub async fn verify_data_dir(options: &OfflineOptions) -> anyhow::Result<Verdict> {
    let verifier = NoteVerifier::parse(&options.key).context("malformed verifier key")?;
    let store = ledger_store_embedded::EmbeddedStore::open(&options.data_dir).context(
        "cannot open the data directory's event log (stop the server, or verify with --server)",
    )?;
    let prefix = format!("{}/", options.tenant);
    let mut leaves = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .read_all(ledger_store::AllRead::Forward { after }, 4096)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.position);
        leaves.extend(
            page.iter()
                .filter(|e| e.stream.as_str().starts_with(&prefix))
                .map(ledger_audit::event_leaf_hash),
        );
    }
    store.close().await?;
    let size = leaves.len() as u64;
    let origin = format!("the log of tenant {}", options.tenant);
    let mut checks = Vec::new();

    let trees = crate::ledger::AuditTrees::open(&options.data_dir)?;
    let stored = trees.leaf_hashes(&options.tenant).await?;
    if let Some(bad) = (0..stored.len()).find(|&i| leaves.get(i) != Some(&stored[i])) {
        return Ok(failed(
            "the event log differs from the stored audit tree",
            Some(bad as u64),
        ));
    }
    checks.push(format!(
        "the stored audit tree's {} leaves match",
        stored.len()
    ));

    if let Some(path) = &options.saved {
        let note = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let saved = match verifier.verify(&note) {
            Ok(saved) => saved,
            Err(error) => {
                return Ok(failed(
                    format!("the saved checkpoint does not verify: {error}"),
                    None,
                ));
            }
        };
        if !saved.origin.ends_with(&format!("/{}", options.tenant)) {
            return Ok(failed(
                format!("the saved checkpoint is of another log ({})", saved.origin),
                None,
            ));
        }
        if saved.size > size {
            return Ok(failed(
                format!("the log shrank from {} to {size} leaves", saved.size),
                Some(size),
            ));
        }
        if root_of(&leaves, saved.size) != saved.root {
            return Ok(failed(
                "the log no longer matches the saved checkpoint",
                None,
            ));
        }
        checks.push(format!(
            "consistent with the saved checkpoint of {} leaves",
            saved.size
        ));
    }
    let root = root_of(&leaves, size);
    Ok(Verdict::Verified {
        origin,
        leaves: size,
        root,
        checks,
    })
}
