//! The key ring: data keys unwrapped on first use and kept in memory, sealing and opening
//! events' personal text, and erasure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use ledger_domain::{Event, pb};
use prost::Message;
use sha2::Sha256;
use uuid::Uuid;

use crate::aead::{Cipher, NONCE};
use crate::keys::{KeyStore, StoredKey};
use crate::{Error, MasterKey};

/// The key store's record of which master key wraps its keys: its fingerprint, then a known
/// text wrapped by it.
const MASTER_CHECK: &str = "master-check";
const CHECK_TEXT: &[u8] = b"dialogue-ledger master key check";
const FINGERPRINT: usize = 16;

/// An unwrapped data key.
struct DataKey {
    id: Uuid,
    tenant: String,
    person: String,
    cipher: Cipher,
    secret: [u8; 32],
}

#[derive(Default)]
struct Cache {
    /// Keys by id; `None` for keys known to be destroyed (ids are never reused).
    by_id: HashMap<Uuid, Option<Arc<DataKey>>>,
    /// The key sealing each person's new text, by tenant and person.
    live: HashMap<(String, String), Arc<DataKey>>,
}

/// What opening an event's personal text found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// The text is in the event, in clear (or it had none).
    Clear,
    /// The text's key was destroyed: the person was erased. The text fields stay empty.
    Erased,
}

/// Data keys for sealing and opening personal text. Cheap to share behind an `Arc`.
pub struct KeyRing {
    store: Arc<dyn KeyStore>,
    master: MasterKey,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("store", &self.store)
            .field("master", &self.master)
            .finish_non_exhaustive()
    }
}

fn key_context(tenant: &str, person: &str, id: Uuid) -> Vec<u8> {
    let mut context = b"dialogue-ledger data key\0".to_vec();
    for part in [
        tenant.as_bytes(),
        b"\0",
        person.as_bytes(),
        b"\0",
        id.as_bytes(),
    ] {
        context.extend_from_slice(part);
    }
    context
}

/// The associated data of a sealed text: it binds the ciphertext to its place in the ledger.
fn sealed_context(tenant: &str, stream: &str, event_id: Uuid, key_id: &str) -> Vec<u8> {
    let mut context = b"dialogue-ledger sealed text v1\0".to_vec();
    for part in [
        tenant.as_bytes(),
        b"\0",
        stream.as_bytes(),
        b"\0",
        event_id.as_bytes(),
        key_id.as_bytes(),
    ] {
        context.extend_from_slice(part);
    }
    context
}

fn check_value(master: &MasterKey) -> Vec<u8> {
    let mut value = master.fingerprint().as_bytes().to_vec();
    value.extend(master.wrap(CHECK_TEXT, MASTER_CHECK.as_bytes()));
    value
}

fn opens_check(master: &MasterKey, value: &[u8]) -> bool {
    value.len() > FINGERPRINT
        && master.unwrap(&value[FINGERPRINT..], MASTER_CHECK.as_bytes())
            == Some(CHECK_TEXT.to_vec())
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Store(format!("a key store task failed: {e}")))?
}

impl KeyRing {
    /// Opens the ring on `store`. The store remembers which master key wraps its keys: another
    /// key is refused before anything is read or written, unless it is `previous` (a rotation),
    /// in which case every data key is re-wrapped under `master` (no event changes). Blocking.
    pub fn unlock(
        store: Arc<dyn KeyStore>,
        master: MasterKey,
        previous: Option<MasterKey>,
    ) -> Result<Self, Error> {
        let check = match store.meta(MASTER_CHECK)? {
            Some(check) => check,
            None => store.init_meta(MASTER_CHECK, &check_value(&master))?,
        };
        if !opens_check(&master, &check) {
            match previous {
                Some(previous) if opens_check(&previous, &check) => {
                    rotate(store.as_ref(), &previous, &master)?;
                }
                _ => {
                    return Err(Error::WrongMasterKey {
                        sealed_with: String::from_utf8_lossy(
                            &check[..FINGERPRINT.min(check.len())],
                        )
                        .into_owned(),
                        configured: master.fingerprint().to_owned(),
                    });
                }
            }
        }
        Ok(Self {
            store,
            master,
            cache: Mutex::new(Cache::default()),
        })
    }

    /// Whether the store has ever been opened (so a missing master key means a lost one).
    pub fn initialised(store: &dyn KeyStore) -> Result<bool, Error> {
        Ok(store.meta(MASTER_CHECK)?.is_some())
    }

    fn unwrap_key(&self, stored: &StoredKey) -> Result<Arc<DataKey>, Error> {
        let context = key_context(&stored.tenant, &stored.person, stored.id);
        let secret: [u8; 32] = (self.master.unwrap(&stored.wrapped, &context))
            .and_then(|secret| secret.try_into().ok())
            .ok_or(Error::Tampered)?;
        Ok(Arc::new(DataKey {
            id: stored.id,
            tenant: stored.tenant.clone(),
            person: stored.person.clone(),
            cipher: Cipher::new(&secret),
            secret,
        }))
    }

    /// The key sealing `person`'s new text, created on first use.
    async fn live_key(self: &Arc<Self>, tenant: &str, person: &str) -> Result<Arc<DataKey>, Error> {
        let slot = (tenant.to_owned(), person.to_owned());
        if let Some(key) = self.cache.lock().unwrap().live.get(&slot) {
            return Ok(key.clone());
        }
        let ring = self.clone();
        let (tenant, person) = slot.clone();
        let key = blocking(move || {
            let stored = match ring.store.live_key(&tenant, &person)? {
                Some(stored) => stored,
                None => {
                    let id = Uuid::new_v4();
                    let secret = rand::random::<[u8; 32]>();
                    let wrapped = ring
                        .master
                        .wrap(&secret, &key_context(&tenant, &person, id));
                    ring.store.insert_live(&StoredKey {
                        id,
                        tenant,
                        person,
                        wrapped,
                    })?
                }
            };
            ring.unwrap_key(&stored)
        })
        .await?;
        let mut cache = self.cache.lock().unwrap();
        cache.by_id.insert(key.id, Some(key.clone()));
        cache.live.insert(slot, key.clone());
        Ok(key)
    }

    /// The key `id`, or `None` if it was destroyed.
    async fn key(self: &Arc<Self>, id: Uuid) -> Result<Option<Arc<DataKey>>, Error> {
        if let Some(key) = self.cache.lock().unwrap().by_id.get(&id) {
            return Ok(key.clone());
        }
        let ring = self.clone();
        let key = blocking(move || {
            (ring.store.key(id)?)
                .map(|stored| ring.unwrap_key(&stored))
                .transpose()
        })
        .await?;
        self.cache.lock().unwrap().by_id.insert(id, key.clone());
        Ok(key)
    }

    /// Encrypts `event`'s personal text with `person`'s key, in place: the text fields are
    /// emptied and `sealed` holds them. An event without text is left as it is.
    pub async fn seal(
        self: &Arc<Self>,
        tenant: &str,
        person: &str,
        stream: &str,
        event_id: Uuid,
        event: &mut Event,
    ) -> Result<(), Error> {
        let Some(text) = event.personal_text() else {
            return Ok(());
        };
        if text.fields.iter().all(|field| field.is_empty()) {
            return Ok(());
        }
        let key = self.live_key(tenant, person).await?;
        let plain = pb::PersonalText {
            fields: text.fields.into_iter().map(std::mem::take).collect(),
        };
        let key_id = key.id.to_string();
        let aad = sealed_context(tenant, stream, event_id, &key_id);
        let (nonce, ciphertext) = key.cipher.seal(&aad, &plain.encode_to_vec());
        *text.sealed = Some(pb::Sealed {
            key_id,
            nonce: nonce.to_vec(),
            ciphertext,
        });
        Ok(())
    }

    /// The plaintext fields of `sealed`, or `None` if its key was destroyed.
    pub async fn open_fields(
        self: &Arc<Self>,
        tenant: &str,
        stream: &str,
        event_id: Uuid,
        sealed: &pb::Sealed,
    ) -> Result<Option<Vec<String>>, Error> {
        let id: Uuid = sealed.key_id.parse().map_err(|_| Error::Tampered)?;
        let Some(key) = self.key(id).await? else {
            return Ok(None);
        };
        let nonce: [u8; NONCE] = sealed
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| Error::Tampered)?;
        let aad = sealed_context(tenant, stream, event_id, &sealed.key_id);
        let plain = (key.cipher)
            .open(&nonce, &aad, &sealed.ciphertext)
            .ok_or(Error::Tampered)?;
        let text = pb::PersonalText::decode(plain.as_slice()).map_err(|_| Error::Tampered)?;
        Ok(Some(text.fields))
    }

    /// Decrypts `event`'s personal text in place (and drops `sealed`).
    pub async fn open(
        self: &Arc<Self>,
        tenant: &str,
        stream: &str,
        event_id: Uuid,
        event: &mut Event,
    ) -> Result<Opened, Error> {
        let Some(sealed) = event.personal_text().and_then(|text| text.sealed.take()) else {
            return Ok(Opened::Clear);
        };
        let Some(fields) = self.open_fields(tenant, stream, event_id, &sealed).await? else {
            return Ok(Opened::Erased);
        };
        let text = event.personal_text().ok_or(Error::Tampered)?;
        if text.fields.len() != fields.len() {
            return Err(Error::Tampered);
        }
        for (field, value) in text.fields.into_iter().zip(fields) {
            *field = value;
        }
        Ok(Opened::Clear)
    }

    /// A digest of `bytes` that only holders of `person`'s key can compute, so a stored digest
    /// of their text cannot confirm a guess once they are erased.
    pub async fn digest(
        self: &Arc<Self>,
        tenant: &str,
        person: &str,
        bytes: &[u8],
    ) -> Result<[u8; 32], Error> {
        let key = self.live_key(tenant, person).await?;
        // HMAC takes keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key.secret).unwrap();
        mac.update(b"dialogue-ledger command digest\0");
        mac.update(bytes);
        Ok(mac.finalize().into_bytes().into())
    }

    /// Erases `person`: destroys their keys in the store and here. Returns how many were
    /// destroyed now (0 if they were already erased).
    pub async fn forget(self: &Arc<Self>, tenant: &str, person: &str) -> Result<u32, Error> {
        let ring = self.clone();
        let (tenant_owned, person_owned) = (tenant.to_owned(), person.to_owned());
        let destroyed = blocking(move || ring.store.destroy(&tenant_owned, &person_owned)).await?;
        self.evict(tenant, person, &destroyed);
        Ok(u32::try_from(destroyed.len()).unwrap_or(u32::MAX))
    }

    /// Drops `person`'s keys from memory (another replica erased them); `destroyed` names keys
    /// known to be gone, which are then not looked up again.
    pub fn evict(&self, tenant: &str, person: &str, destroyed: &[Uuid]) {
        let mut cache = self.cache.lock().unwrap();
        cache.live.remove(&(tenant.to_owned(), person.to_owned()));
        cache.by_id.retain(|_, key| {
            key.as_ref()
                .is_none_or(|key| key.tenant != tenant || key.person != person)
        });
        for id in destroyed {
            cache.by_id.insert(*id, None);
        }
    }
}

/// Re-wraps every data key from `previous` to `master`, with the new check value, atomically.
fn rotate(store: &dyn KeyStore, previous: &MasterKey, master: &MasterKey) -> Result<(), Error> {
    let mut keys = store.keys()?;
    for key in &mut keys {
        let context = key_context(&key.tenant, &key.person, key.id);
        let secret = previous
            .unwrap(&key.wrapped, &context)
            .ok_or(Error::Tampered)?;
        key.wrapped = master.wrap(&secret, &context);
    }
    store.rewrap(&keys, (MASTER_CHECK, &check_value(master)))?;
    tracing::info!(
        keys = keys.len(),
        from = previous.fingerprint(),
        to = master.fingerprint(),
        "data keys re-wrapped under the new master key"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SqliteKeys;

    fn master() -> MasterKey {
        MasterKey::parse(&MasterKey::generate()).unwrap()
    }

    fn insight(text: &str) -> Event {
        Event::from(pb::InsightRecorded {
            insight_id: "i-1".into(),
            subject_id: "ann".into(),
            text: text.into(),
            tags: vec!["rust".into()],
            ..Default::default()
        })
    }

    fn ring(dir: &std::path::Path, master: MasterKey) -> Result<Arc<KeyRing>, Error> {
        let store = Arc::new(SqliteKeys::open(&dir.join("keys.db"))?);
        KeyRing::unlock(store, master, None).map(Arc::new)
    }

    #[tokio::test]
    async fn sealed_text_opens_only_in_its_place_and_is_gone_after_forget() {
        let dir = tempfile::tempdir().unwrap();
        let ring = ring(dir.path(), master()).unwrap();
        let id = Uuid::new_v4();
        let mut event = insight("likes pairing");
        ring.seal("t", "ann", "t/insight-i-1", id, &mut event)
            .await
            .unwrap();
        let Event::InsightRecorded(sealed) = &event else {
            unreachable!()
        };
        assert_eq!(sealed.text, "");
        assert_eq!(sealed.tags, ["rust"], "tags stay in clear");
        let stored = event.encode();
        assert!(!stored.windows(7).any(|w| w == b"pairing"));

        let mut opened = event.clone();
        assert_eq!(
            ring.open("t", "t/insight-i-1", id, &mut opened)
                .await
                .unwrap(),
            Opened::Clear
        );
        assert_eq!(opened, insight("likes pairing"));

        // Moved to another event, stream or tenant, the ciphertext does not open.
        for (tenant, stream, event_id) in [
            ("t", "t/insight-i-1", Uuid::new_v4()),
            ("t", "t/insight-i-2", id),
            ("u", "t/insight-i-1", id),
        ] {
            let mut moved = event.clone();
            assert!(matches!(
                ring.open(tenant, stream, event_id, &mut moved).await,
                Err(Error::Tampered)
            ));
        }
        // A flipped bit in the ciphertext is detected.
        let mut tampered = event.clone();
        if let Event::InsightRecorded(e) = &mut tampered {
            e.sealed.as_mut().unwrap().ciphertext[0] ^= 1;
        }
        assert!(matches!(
            ring.open("t", "t/insight-i-1", id, &mut tampered).await,
            Err(Error::Tampered)
        ));

        assert_eq!(ring.forget("t", "ann").await.unwrap(), 1);
        assert_eq!(ring.forget("t", "ann").await.unwrap(), 0);
        let mut erased = event.clone();
        assert_eq!(
            ring.open("t", "t/insight-i-1", id, &mut erased)
                .await
                .unwrap(),
            Opened::Erased
        );
        let Event::InsightRecorded(erased) = erased else {
            unreachable!()
        };
        assert_eq!(erased.text, "");
    }

    #[tokio::test]
    async fn a_reopened_ring_opens_old_text_and_forget_reaches_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::generate();
        let id = Uuid::new_v4();
        let mut event = insight("secret");
        let first = ring(dir.path(), MasterKey::parse(&key).unwrap()).unwrap();
        first.seal("t", "ann", "s", id, &mut event).await.unwrap();
        let digest = first.digest("t", "ann", b"body").await.unwrap();
        drop(first);

        let second = ring(dir.path(), MasterKey::parse(&key).unwrap()).unwrap();
        assert_eq!(second.digest("t", "ann", b"body").await.unwrap(), digest);
        let mut opened = event.clone();
        second.open("t", "s", id, &mut opened).await.unwrap();
        assert_eq!(opened, insight("secret"));
        second.forget("t", "ann").await.unwrap();
        drop(second);

        let third = ring(dir.path(), MasterKey::parse(&key).unwrap()).unwrap();
        let mut erased = event.clone();
        assert_eq!(
            third.open("t", "s", id, &mut erased).await.unwrap(),
            Opened::Erased
        );
        assert_ne!(third.digest("t", "ann", b"body").await.unwrap(), digest);
    }

    #[tokio::test]
    async fn a_wrong_master_key_is_refused_and_a_rotation_rewraps() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (MasterKey::generate(), MasterKey::generate());
        let id = Uuid::new_v4();
        let mut event = insight("secret");
        let first = ring(dir.path(), MasterKey::parse(&old).unwrap()).unwrap();
        first.seal("t", "ann", "s", id, &mut event).await.unwrap();
        drop(first);

        let error = ring(dir.path(), MasterKey::parse(&new).unwrap()).unwrap_err();
        assert!(matches!(error, Error::WrongMasterKey { .. }), "{error}");
        let message = error.to_string();
        assert!(message.contains(MasterKey::parse(&old).unwrap().fingerprint()));

        let store = Arc::new(SqliteKeys::open(&dir.path().join("keys.db")).unwrap());
        let rotated = Arc::new(
            KeyRing::unlock(
                store,
                MasterKey::parse(&new).unwrap(),
                Some(MasterKey::parse(&old).unwrap()),
            )
            .unwrap(),
        );
        let mut opened = event.clone();
        rotated.open("t", "s", id, &mut opened).await.unwrap();
        assert_eq!(opened, insight("secret"));
        drop(rotated);
        // After the rotation the new key alone opens the store, the old one no longer does.
        assert!(ring(dir.path(), MasterKey::parse(&new).unwrap()).is_ok());
        assert!(ring(dir.path(), MasterKey::parse(&old).unwrap()).is_err());
    }
}
