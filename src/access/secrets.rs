//! Provider secrets at rest: AES-256-GCM under a master key, with the secret's name as
//! associated data. The master key comes from `OPSDECK_MASTER_KEY` (base64 or hex of 32 bytes)
//! or from a key file created on first start with mode 0600. Decrypted values travel wrapped in
//! [`Secret`], whose `Debug` and `Display` print `***`.

use std::fmt;
use std::io::Write;
use std::path::Path;

use aes_gcm::aead::Nonce;
use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore;
use serde::Serialize;

use super::audit::{self, Actor};
use super::{AccessError, Result};
use crate::args;
use crate::store::{Store, now_ms};

/// A value that must not appear in logs or error messages.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The only way to read the value; grep for it when auditing where secrets flow.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The master key, held only in this process's memory.
#[derive(Clone)]
pub struct MasterKey(Secret<[u8; 32]>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

impl MasterKey {
    /// Decodes a key given as 64 hex characters or base64 (standard or URL-safe) of 32 bytes.
    pub fn decode(text: &str) -> Result<Self> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).ok()
        } else {
            STANDARD
                .decode(text)
                .ok()
                .or_else(|| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok())
        };
        let bytes: [u8; 32] = bytes.and_then(|b| b.try_into().ok()).ok_or_else(|| {
            AccessError::Invalid(
                "master key must be 32 bytes, written as 64 hex characters or base64".into(),
            )
        })?;
        Ok(Self(Secret::new(bytes)))
    }

    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(Secret::new(bytes))
    }

    /// `env` (the value of `OPSDECK_MASTER_KEY`) if given, else the key file, created with mode
    /// 0600 when missing. A key file readable by others is refused rather than used.
    pub fn load_or_create(env: Option<&str>, file: &Path) -> Result<Self> {
        if let Some(text) = env.filter(|t| !t.trim().is_empty()) {
            return Self::decode(text);
        }
        match std::fs::read_to_string(file) {
            Ok(text) => {
                check_mode(file)?;
                Self::decode(&text).map_err(|_| {
                    AccessError::Invalid(format!(
                        "{}: not a valid master key (32 bytes, hex or base64)",
                        file.display()
                    ))
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                write_new_key_file(file, &STANDARD.encode(key.0.expose()))?;
                Ok(key)
            }
            Err(e) => Err(AccessError::Invalid(format!(
                "{}: cannot read master key: {e}",
                file.display()
            ))),
        }
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.0.expose().into())
    }

    /// Encrypts `plaintext` bound to `name`; returns (nonce, ciphertext with tag).
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let ct = self
            .cipher()
            .encrypt(
                &Nonce::<Aes256Gcm>::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| AccessError::Crypto("encryption failed".into()))?;
        Ok((nonce.to_vec(), ct))
    }

    /// Decrypts what [`MasterKey::seal`] produced for the same `name`.
    pub fn open(&self, name: &str, nonce: &[u8], ciphertext: &[u8]) -> Result<Secret<Vec<u8>>> {
        let nonce: [u8; 12] = nonce
            .try_into()
            .map_err(|_| AccessError::Crypto("stored nonce has the wrong length".into()))?;
        self.cipher()
            .decrypt(
                &Nonce::<Aes256Gcm>::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: name.as_bytes(),
                },
            )
            .map(Secret::new)
            .map_err(|_| {
                AccessError::Crypto(format!(
                    "secret {name:?} does not decrypt: wrong master key, or the row was altered"
                ))
            })
    }
}

#[cfg(unix)]
fn check_mode(file: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(file)
        .map_err(|e| AccessError::Invalid(format!("{}: {e}", file.display())))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(AccessError::Invalid(format!(
            "{}: master key file has mode {:o}; run chmod 600 on it",
            file.display(),
            mode & 0o777
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_file: &Path) -> Result<()> {
    Ok(())
}

fn write_new_key_file(file: &Path, contents: &str) -> Result<()> {
    let fail = |e: std::io::Error| {
        AccessError::Invalid(format!("{}: cannot create master key: {e}", file.display()))
    };
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::store::files::create_private_dir(dir).map_err(fail)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(file).map_err(fail)?;
    f.write_all(contents.as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    Ok(())
}

/// A stored secret as listed: its name and when it changed, never its value.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SecretInfo {
    pub name: String,
    pub updated_by: String,
    pub updated_at: i64,
}
crate::from_row!(SecretInfo {
    name,
    updated_by,
    updated_at
});

/// Secret names are what connectors look them up by: `stripe.secret_key`, `twilio.auth_token`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(AccessError::Invalid(
            "secret name must be 1–128 characters of a–z, 0–9, '.', '_' or '-' (e.g. stripe.secret_key)".into(),
        ))
    }
}

pub async fn put(
    store: &Store,
    key: &MasterKey,
    name: &str,
    value: &Secret<String>,
    actor: &Actor,
) -> Result<()> {
    check_name(name)?;
    if value.expose().is_empty() || value.expose().len() > 16 * 1024 {
        return Err(AccessError::Invalid(
            "secret value must be 1 byte to 16 KiB".into(),
        ));
    }
    let (nonce, ct) = key.seal(name, value.expose().as_bytes())?;
    let mut tx = store.begin().await?;
    tx.execute(
        "INSERT INTO secrets (name, nonce, ciphertext, updated_by, updated_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (name) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext,
           updated_by = excluded.updated_by, updated_at = excluded.updated_at",
        args![name, nonce, ct, &actor.name, now_ms()],
    )
    .await?;
    audit::record(&mut tx, actor, "secret.set", Some(name), None).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn get(store: &Store, key: &MasterKey, name: &str) -> Result<Option<Secret<String>>> {
    let row: Option<(Vec<u8>, Vec<u8>)> = store
        .fetch_optional(
            "SELECT nonce, ciphertext FROM secrets WHERE name = $1",
            args![name],
        )
        .await?;
    let Some((nonce, ct)) = row else {
        return Ok(None);
    };
    let plain = key.open(name, &nonce, &ct)?;
    String::from_utf8(plain.expose().clone())
        .map(|s| Some(Secret::new(s)))
        .map_err(|_| AccessError::Crypto(format!("secret {name:?} is not UTF-8")))
}

pub async fn delete(store: &Store, name: &str, actor: &Actor) -> Result<()> {
    let mut tx = store.begin().await?;
    if tx
        .execute("DELETE FROM secrets WHERE name = $1", args![name])
        .await?
        == 0
    {
        return Err(AccessError::NotFound(format!("secret {name}")));
    }
    audit::record(&mut tx, actor, "secret.delete", Some(name), None).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn list(store: &Store) -> Result<Vec<SecretInfo>> {
    Ok(store
        .fetch_all(
            "SELECT name, updated_by, updated_at FROM secrets ORDER BY name",
            args![],
        )
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_binding() {
        let k = MasterKey::generate();
        let (n, ct) = k.seal("stripe.secret_key", b"sk_live_abc").unwrap();
        assert!(!ct.windows(11).any(|w| w == b"sk_live_abc"));
        assert_eq!(
            k.open("stripe.secret_key", &n, &ct).unwrap().expose(),
            b"sk_live_abc"
        );
        assert!(
            k.open("other.name", &n, &ct).is_err(),
            "name is bound as associated data"
        );
        assert!(
            MasterKey::generate()
                .open("stripe.secret_key", &n, &ct)
                .is_err()
        );
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2".to_string());
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(format!("{:?}", MasterKey::generate()), "MasterKey(***)");
    }

    #[test]
    fn master_key_decoding() {
        assert!(MasterKey::decode(&"ab".repeat(32)).is_ok());
        assert!(MasterKey::decode(&STANDARD.encode([7u8; 32])).is_ok());
        assert!(MasterKey::decode("short").is_err());
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/master.key");
        let k1 = MasterKey::load_or_create(None, &path).unwrap();
        let k2 = MasterKey::load_or_create(None, &path).unwrap();
        assert_eq!(k1.0.expose(), k2.0.expose());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(MasterKey::load_or_create(None, &path).is_err());
        }
    }
}
