//! The one immutable thing a release carries: the [`Artifact`] trait, its content
//! [`Digest`], the serde descriptor [`ArtifactRef`], and [`FileArtifact`], which hashes a file.
//!
//! A release fixes its artifact's digest when it is built; every later move is handed the
//! artifact again and refuses it unless the digest matches, so what reaches production is,
//! byte for byte, what was tested.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::forward::forward_impls;
use crate::id::{ReleaseId, StageId};

/// `bytes` as lower-case hex: the one encoder of digests, fingerprints and keys.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut hex = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// What can be wrong with an artifact or its digest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    /// A string is not a valid digest.
    #[error("invalid digest `{}`: {reason}", crate::id::quoted(.input))]
    InvalidDigest {
        /// The text that failed to parse.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A move was handed an artifact other than the one fixed when the release was built.
    #[error("artifact mismatch for release `{release}`: expected {expected}, found {found}")]
    Mismatch {
        /// The release.
        release: ReleaseId,
        /// The digest fixed at build time.
        expected: Digest,
        /// The digest of the artifact that was handed in.
        found: Digest,
    },
    /// The build step finished but no build stage reported an artifact.
    #[error("the build step of release `{release}` succeeded but no stage produced an artifact")]
    Missing {
        /// The release.
        release: ReleaseId,
    },
    /// Two build stages reported different artifacts under one name; a release carries one
    /// artifact, or one manifest of artifacts with distinct names.
    #[error(
        "stages `{first_stage}` and `{second_stage}` produced different artifacts ({first} and {second})"
    )]
    Conflicting {
        /// The first stage that reported an artifact.
        first_stage: StageId,
        /// Its artifact's digest.
        first: Digest,
        /// The second stage.
        second_stage: StageId,
        /// Its artifact's digest.
        second: Digest,
    },
    /// Two artifacts of one manifest have the same name and different digests.
    #[error("two artifacts are named `{name}`: {first} and {second}")]
    DuplicateName {
        /// The name.
        name: String,
        /// The first one's digest.
        first: Digest,
        /// The second one's digest.
        second: Digest,
    },
    /// A manifest's digest is not the digest of the artifacts it lists: it was edited.
    #[error("manifest `{name}` lists artifacts whose digest is {found}, not its own {expected}")]
    ManifestMismatch {
        /// The manifest's name.
        name: String,
        /// The digest the manifest carries.
        expected: Digest,
        /// The digest of what it lists.
        found: Digest,
    },
    /// A file artifact's bytes changed on disk after it was hashed.
    #[error("artifact `{}` changed on disk: expected {expected}, found {found}", .path.display())]
    Changed {
        /// The file.
        path: PathBuf,
        /// The digest when it was opened.
        expected: Digest,
        /// The digest now.
        found: Digest,
    },
    /// Reading an artifact from disk failed.
    #[error("cannot read artifact `{}`: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

type Result<T, E = ArtifactError> = std::result::Result<T, E>;

/// A hash algorithm a [`Digest`] can be computed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Algorithm {
    /// SHA-256 (64 hex digits), the default and what OCI registries use.
    Sha256,
    /// SHA-512 (128 hex digits).
    Sha512,
}

impl Algorithm {
    /// The algorithm's name as it appears before the colon.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// How many hex digits a digest of this algorithm has.
    #[must_use]
    pub const fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A content digest: an algorithm and the lower-case hex of the hash, shown and parsed as
/// `sha256:<hex>`.
///
/// ```
/// use tollgate::artifact::Digest;
///
/// let d = Digest::sha256(b"hello");
/// assert_eq!(
///     d.to_string(),
///     "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
/// );
/// assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
/// assert!("md5:abc".parse::<Digest>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// The SHA-256 digest of `bytes`.
    #[must_use]
    pub fn sha256(bytes: &[u8]) -> Self {
        Digest::from_hash(Algorithm::Sha256, &sha2::Sha256::digest(bytes))
    }

    /// The SHA-512 digest of `bytes`.
    #[must_use]
    pub fn sha512(bytes: &[u8]) -> Self {
        Digest::from_hash(Algorithm::Sha512, &sha2::Sha512::digest(bytes))
    }

    /// The SHA-256 digest of everything `reader` yields. Blocking: call it off async threads.
    pub fn sha256_reader(mut reader: impl Read) -> std::io::Result<Self> {
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(Digest::from_hash(Algorithm::Sha256, &hasher.finalize()))
    }

    fn from_hash(algorithm: Algorithm, hash: &[u8]) -> Self {
        Digest {
            algorithm,
            hex: to_hex(hash),
        }
    }

    /// The algorithm.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hash as lower-case hex.
    #[must_use]
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex digits, for display in narrow places.
    #[must_use]
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = ArtifactError;

    fn from_str(s: &str) -> Result<Self> {
        let invalid = |reason| ArtifactError::InvalidDigest {
            input: s.to_owned(),
            reason,
        };
        let (name, hex) = s
            .split_once(':')
            .ok_or_else(|| invalid("expected `<algorithm>:<hex>`"))?;
        let algorithm = match name {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(invalid("unknown algorithm (expected sha256 or sha512)")),
        };
        if hex.len() != algorithm.hex_len() {
            return Err(invalid("wrong number of hex digits for the algorithm"));
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid("the hash must be lower-case hex"));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }
}

impl TryFrom<String> for Digest {
    type Error = ArtifactError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.to_string()
    }
}

/// Something a release ships: an image, a binary, an archive, a chart.
///
/// Implementors name the artifact and give its content digest; the digest is its identity.
/// Compute it once, when the artifact is made, and never let it change.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a tollgate artifact",
    label = "this type does not implement `tollgate::artifact::Artifact`",
    note = "use `FileArtifact::open(path)` or `ArtifactRef::new(name, digest)`, or implement `name` and `digest`"
)]
pub trait Artifact: Send + Sync {
    /// A human-readable name (`shop-api`, `app.tar.gz`).
    fn name(&self) -> &str;

    /// The content digest that identifies the artifact.
    fn digest(&self) -> &Digest;

    /// Free-form metadata (version, build host, size) recorded with the release.
    fn metadata(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// Checks that the artifact's bytes still have its [`digest`](Artifact::digest): every
    /// move after the build calls it before it runs, so that bytes changed since the tests
    /// (a file rewritten in place) are refused, never shipped. An artifact that holds only a
    /// digest (an [`ArtifactRef`]) has no bytes to re-read and passes; a [`FileArtifact`]
    /// hashes its file again, on a thread of its own so that no executor thread waits.
    fn verify(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

forward_impls! {
    impl Artifact {
        fn name(&self) -> &str;
        fn digest(&self) -> &Digest;
        fn metadata(&self) -> BTreeMap<String, String>;
        fn verify(&self) -> BoxFuture<'_, Result<()>>;
    }
}

/// The serde descriptor of an artifact: name, digest and metadata. This is what a release
/// records and what a build stage reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    /// The artifact's name.
    pub name: String,
    /// Its content digest.
    pub digest: Digest,
    /// Its metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// For a manifest (see [`ArtifactRef::manifest`]), the named artifacts it lists, each
    /// with its digest; `digest` is then the digest of this list. Empty for one artifact.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub artifacts: BTreeMap<String, Digest>,
}

impl ArtifactRef {
    /// A descriptor with no metadata.
    pub fn new(name: impl Into<String>, digest: Digest) -> Self {
        ArtifactRef {
            name: name.into(),
            digest,
            metadata: BTreeMap::new(),
            artifacts: BTreeMap::new(),
        }
    }

    /// A manifest named `name` of several named artifacts: its digest is the SHA-256 of the
    /// list of names and digests (sorted by name, each part length-prefixed), so the one
    /// digest a release carries pins every artifact in it, and changing, adding or removing
    /// one changes it. A build whose stages report artifacts under different names gets
    /// their manifest as its artifact.
    ///
    /// ```
    /// use tollgate::artifact::{Artifact, ArtifactRef, Digest};
    ///
    /// let linux = ArtifactRef::from_bytes("ruff-linux.tar.gz", b"elf");
    /// let macos = ArtifactRef::from_bytes("ruff-macos.tar.gz", b"mach-o");
    /// let manifest = ArtifactRef::manifest("ruff", [linux.clone(), macos])?;
    /// assert_eq!(manifest.artifacts["ruff-linux.tar.gz"], linux.digest);
    /// assert_eq!(manifest.digest, ArtifactRef::manifest_digest(&manifest.artifacts));
    ///
    /// // A manifest edited after the fact no longer verifies.
    /// let mut edited = manifest.clone();
    /// edited.artifacts.insert("ruff-linux.tar.gz".into(), Digest::sha256(b"other"));
    /// assert!(futures::executor::block_on(edited.verify()).is_err());
    /// assert!(futures::executor::block_on(manifest.verify()).is_ok());
    /// # Ok::<(), tollgate::artifact::ArtifactError>(())
    /// ```
    pub fn manifest(
        name: impl Into<String>,
        artifacts: impl IntoIterator<Item = ArtifactRef>,
    ) -> Result<Self> {
        let mut listed: BTreeMap<String, Digest> = BTreeMap::new();
        for artifact in artifacts {
            artifact.check_manifest()?;
            let entries = if artifact.artifacts.is_empty() {
                vec![(artifact.name, artifact.digest)]
            } else {
                artifact.artifacts.into_iter().collect()
            };
            for (entry, digest) in entries {
                if let Some(first) = listed.get(&entry) {
                    if *first != digest {
                        return Err(ArtifactError::DuplicateName {
                            name: entry,
                            first: first.clone(),
                            second: digest,
                        });
                    }
                }
                listed.insert(entry, digest);
            }
        }
        Ok(ArtifactRef {
            name: name.into(),
            digest: ArtifactRef::manifest_digest(&listed),
            metadata: BTreeMap::new(),
            artifacts: listed,
        })
    }

    /// The digest of a manifest listing `artifacts`.
    #[must_use]
    pub fn manifest_digest(artifacts: &BTreeMap<String, Digest>) -> Digest {
        let mut text = Vec::new();
        text.extend_from_slice(b"tollgate-manifest-v1\n");
        for (name, digest) in artifacts {
            let digest = digest.to_string();
            for part in [name.as_bytes(), digest.as_bytes()] {
                text.extend_from_slice(&(part.len() as u64).to_le_bytes());
                text.extend_from_slice(part);
            }
        }
        Digest::sha256(&text)
    }

    /// For a manifest, that its digest is the digest of what it lists.
    pub(crate) fn verify_manifest(&self) -> Result<()> {
        self.check_manifest()
    }

    fn check_manifest(&self) -> Result<()> {
        if self.artifacts.is_empty() {
            return Ok(());
        }
        let found = ArtifactRef::manifest_digest(&self.artifacts);
        if found == self.digest {
            Ok(())
        } else {
            Err(ArtifactError::ManifestMismatch {
                name: self.name.clone(),
                expected: self.digest.clone(),
                found,
            })
        }
    }

    /// The descriptor of any artifact.
    pub fn of(artifact: &(impl Artifact + ?Sized)) -> Self {
        ArtifactRef {
            name: artifact.name().to_owned(),
            digest: artifact.digest().clone(),
            metadata: artifact.metadata(),
            artifacts: BTreeMap::new(),
        }
    }

    /// The descriptor of in-memory bytes, hashed with SHA-256.
    pub fn from_bytes(name: impl Into<String>, bytes: &[u8]) -> Self {
        ArtifactRef::new(name, Digest::sha256(bytes))
    }

    /// Adds a metadata entry.
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

impl Artifact for ArtifactRef {
    fn name(&self) -> &str {
        &self.name
    }
    fn digest(&self) -> &Digest {
        &self.digest
    }
    fn metadata(&self) -> BTreeMap<String, String> {
        self.metadata.clone()
    }
    /// A manifest re-derives its digest from what it lists; one artifact has no bytes here
    /// to re-read and passes.
    fn verify(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(std::future::ready(self.check_manifest()))
    }
}

/// A file on disk, identified by the SHA-256 of its bytes.
///
/// Opening hashes the file (blocking I/O: do it off async threads, e.g. in the build stage's
/// executor before reporting the artifact). [`Artifact::verify`] hashes it again, to
/// catch a file changed on disk after it was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileArtifact {
    path: PathBuf,
    name: String,
    digest: Digest,
    size: u64,
}

impl FileArtifact {
    /// Hashes the file at `path`. The name is the file name.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let (digest, size) = hash_file(&path)?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        Ok(FileArtifact {
            path,
            name,
            digest,
            size,
        })
    }

    /// The file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size in bytes when it was hashed.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Hashes the file again, on this thread (it reads the whole file: call it where
    /// blocking is fine), and fails with [`ArtifactError::Changed`], naming both digests, if
    /// its bytes changed since it was opened. Moves use [`Artifact::verify`], which does the
    /// same on a thread of its own.
    pub fn verify_now(&self) -> Result<()> {
        let (now, _) = hash_file(&self.path)?;
        if now == self.digest {
            Ok(())
        } else {
            Err(ArtifactError::Changed {
                path: self.path.clone(),
                expected: self.digest.clone(),
                found: now,
            })
        }
    }
}

fn hash_file(path: &Path) -> Result<(Digest, u64)> {
    let io = |source| ArtifactError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let digest = Digest::sha256_reader(BufReader::new(file)).map_err(io)?;
    Ok((digest, size))
}

impl Artifact for FileArtifact {
    fn name(&self) -> &str {
        &self.name
    }
    fn digest(&self) -> &Digest {
        &self.digest
    }
    fn metadata(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("size".to_owned(), self.size.to_string())])
    }
    fn verify(&self) -> BoxFuture<'_, Result<()>> {
        let file = self.clone();
        let (done, result) = futures::channel::oneshot::channel();
        // Hashing reads the whole file: a thread of its own keeps it off executor threads.
        let spawned = std::thread::Builder::new()
            .name("tollgate-verify".to_owned())
            .spawn(move || {
                let _ = done.send(file.verify_now());
            });
        Box::pin(async move {
            if let Err(error) = spawned {
                return Err(ArtifactError::Io {
                    path: self.path.clone(),
                    source: error,
                });
            }
            result.await.unwrap_or_else(|_| {
                Err(ArtifactError::Io {
                    path: self.path.clone(),
                    source: std::io::Error::other("the verifying thread stopped"),
                })
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_each_malformation_with_a_reason() {
        for (input, needle) in [
            ("nocolon", "expected"),
            ("md5:abcd", "unknown algorithm"),
            ("sha256:abc", "wrong number"),
            (
                "sha256:2CF24DBA5FB0A30E26E83B2AC5B9E29E1B161E5C1FA7425E73043362938B9824",
                "lower-case hex",
            ),
        ] {
            let err = input.parse::<Digest>().unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(input), "{msg}");
            assert!(msg.contains(needle), "{msg}");
        }
    }

    #[test]
    fn sha512_round_trips() {
        let d = Digest::sha512(b"x");
        assert_eq!(d.hex().len(), 128);
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn serde_form_is_the_display_string() {
        let d = Digest::sha256(b"a");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        let back: Digest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
        assert!(serde_json::from_str::<Digest>("\"sha256:zz\"").is_err());
    }

    #[test]
    fn file_artifact_hashes_and_detects_change() {
        let dir = std::env::temp_dir().join(format!("tollgate-artifact-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("app.bin");
        std::fs::write(&path, b"hello").unwrap();
        let artifact = FileArtifact::open(&path).unwrap();
        assert_eq!(artifact.digest(), &Digest::sha256(b"hello"));
        assert_eq!(artifact.name(), "app.bin");
        assert_eq!(artifact.path(), path);
        assert_eq!(artifact.size(), 5);
        assert_eq!(
            artifact.metadata(),
            BTreeMap::from([("size".to_owned(), "5".to_owned())])
        );
        artifact.verify_now().unwrap();
        std::fs::write(&path, b"hellO").unwrap();
        let err = artifact.verify_now().unwrap_err();
        let err_async = futures::executor::block_on(Artifact::verify(&artifact)).unwrap_err();
        assert!(
            matches!(err_async, ArtifactError::Changed { .. }),
            "{err_async}"
        );
        assert!(
            err.to_string()
                .contains(&Digest::sha256(b"hellO").to_string())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_digest_shows_its_algorithm_hex_and_short_form() {
        let d = Digest::sha256(b"hello");
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.algorithm().to_string(), "sha256");
        assert_eq!(
            d.hex(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(d.short(), "2cf24dba5fb0");
        assert_eq!(format!("{d:?}"), format!("Digest({d})"));
        assert_eq!(String::from(d.clone()), d.to_string());
        let long = Digest::sha512(b"hello");
        assert_eq!(long.algorithm(), Algorithm::Sha512);
        assert!(long.to_string().starts_with("sha512:"), "{long}");
        assert_eq!(
            (Algorithm::Sha256.hex_len(), Algorithm::Sha512.hex_len()),
            (64, 128)
        );
    }

    #[test]
    fn a_reader_hashes_to_the_digest_of_its_bytes() {
        // More than one read buffer's worth, so the loop runs until the reader is drained.
        let bytes = vec![7u8; 100 * 1024];
        let d = Digest::sha256_reader(&bytes[..]).unwrap();
        assert_eq!(d, Digest::sha256(&bytes));
        assert_eq!(
            Digest::sha256_reader(&b""[..]).unwrap(),
            Digest::sha256(b"")
        );
    }

    /// An artifact that relies on the trait's default metadata.
    struct Image(String, Digest);

    impl Artifact for Image {
        fn name(&self) -> &str {
            &self.0
        }
        fn digest(&self) -> &Digest {
            &self.1
        }
    }

    #[test]
    fn an_artifact_without_metadata_records_none() {
        let image = Image("shop-api".to_owned(), Digest::sha256(b"layers"));
        let recorded = ArtifactRef::of(&image);
        assert_eq!(recorded, ArtifactRef::new("shop-api", image.1.clone()));
        assert!(recorded.metadata.is_empty());
    }

    #[test]
    fn a_borrowed_boxed_or_shared_artifact_records_as_the_artifact_itself() {
        let artifact = ArtifactRef::from_bytes("app.tar.gz", b"app")
            .with_metadata("version", "1.4.0")
            .with_metadata("host", "ci-3");
        assert_eq!(artifact.name(), "app.tar.gz");
        assert_eq!(artifact.digest(), &Digest::sha256(b"app"));
        assert_eq!(ArtifactRef::of(&artifact), artifact);
        let borrowed: &dyn Artifact = &artifact;
        let boxed: Box<dyn Artifact> = Box::new(artifact.clone());
        let shared: std::sync::Arc<dyn Artifact> = std::sync::Arc::new(artifact.clone());
        assert_eq!(ArtifactRef::of(&borrowed), artifact);
        assert_eq!(ArtifactRef::of(&boxed), artifact);
        assert_eq!(ArtifactRef::of(&shared), artifact);
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = FileArtifact::open("/definitely/not/here.tar").unwrap_err();
        assert!(err.to_string().contains("/definitely/not/here.tar"));
    }
}
