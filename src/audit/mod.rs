//! Audit exports of a release's history, in the formats supply-chain tools read: in-toto
//! Statements (v1) about the release's artifact, with SLSA provenance (v1) for the build and
//! a tollgate predicate for the human approval (who, under which policy, for which digest and
//! environment), wrapped in DSSE envelopes signed by a host's [`Signer`].
//!
//! The statements are made from a release's record; export them from a release restored from
//! the journal ([`Pipeline::restore`](crate::pipeline::Pipeline::restore)), whose record the
//! pipeline re-derived, rather than from stored plain data.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::lifecycle::Step;
use crate::record::AnyRelease;
use crate::time::Timestamp;

/// The in-toto Statement type this module writes.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// SLSA provenance, version 1.
pub const SLSA_PROVENANCE: &str = "https://slsa.dev/provenance/v1";
/// tollgate's approval predicate.
pub const APPROVAL_PREDICATE: &str = "https://tollgate.rs/attestation/approval/v1";
/// The DSSE payload type of an in-toto statement.
pub const IN_TOTO_PAYLOAD: &str = "application/vnd.in-toto+json";
/// The build type named in the provenance.
pub const BUILD_TYPE: &str = "https://tollgate.rs/build/pipeline/v1";

/// An in-toto Statement (v1): subjects (the artifact, by digest), and one predicate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// Always [`STATEMENT_TYPE`].
    #[serde(rename = "_type")]
    pub statement_type: String,
    /// What the statement is about.
    pub subject: Vec<Subject>,
    /// The predicate's type.
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// The predicate.
    pub predicate: Value,
}

/// One subject of a statement: a name and its digests by algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// The artifact's name.
    pub name: String,
    /// Its digests, `{"sha256": "<hex>"}`.
    pub digest: std::collections::BTreeMap<String, String>,
}

/// What can go wrong with an export.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The release has no artifact yet (it was never built), so there is nothing to attest.
    #[error("release `{release}` has no artifact to attest yet")]
    NotBuilt {
        /// The release.
        release: String,
    },
    /// The release has no human approval (not yet approved, or a deployment release).
    #[error("release `{release}` has no approval to attest")]
    NotApproved {
        /// The release.
        release: String,
    },
    /// The signer failed.
    #[error("signing failed: {0}")]
    Sign(String),
}

/// Signs DSSE payloads: the host's key (a KMS, an HSM, an ed25519 key on disk).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a tollgate signer",
    note = "implement `key_id` and `sign(&self, message: &[u8])`, which signs the DSSE pre-authentication encoding"
)]
pub trait Signer: Send + Sync {
    /// The id of the key, as verifiers look it up.
    fn key_id(&self) -> String;

    /// A signature over `message` (the DSSE pre-authentication encoding of the payload).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, AuditError>;
}

/// A DSSE envelope: a payload, its type and its signatures, each base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The payload, base64.
    pub payload: String,
    /// Its type ([`IN_TOTO_PAYLOAD`]).
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// The signatures.
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature of an [`Envelope`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// The signer's key id.
    pub keyid: String,
    /// The signature, base64.
    pub sig: String,
}

/// The DSSE pre-authentication encoding of `payload` of type `payload_type`: what a signer
/// signs and a verifier checks.
#[must_use]
pub fn pre_authentication_encoding(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

impl Statement {
    /// The statement in a DSSE envelope signed by `signer`.
    pub fn sign(&self, signer: &dyn Signer) -> Result<Envelope, AuditError> {
        let payload = serde_json::to_vec(self).map_err(|e| AuditError::Sign(e.to_string()))?;
        let signature = signer.sign(&pre_authentication_encoding(IN_TOTO_PAYLOAD, &payload))?;
        Ok(Envelope {
            payload: BASE64.encode(&payload),
            payload_type: IN_TOTO_PAYLOAD.to_owned(),
            signatures: vec![EnvelopeSignature {
                keyid: signer.key_id(),
                sig: BASE64.encode(signature),
            }],
        })
    }
}

impl Envelope {
    /// The payload's bytes, decoded.
    #[must_use]
    pub fn payload_bytes(&self) -> Option<Vec<u8>> {
        BASE64.decode(&self.payload).ok()
    }

    /// The signatures' bytes, decoded, with their key ids.
    #[must_use]
    pub fn signature_bytes(&self) -> Vec<(String, Vec<u8>)> {
        self.signatures
            .iter()
            .filter_map(|s| Some((s.keyid.clone(), BASE64.decode(&s.sig).ok()?)))
            .collect()
    }
}

/// RFC 3339, as in-toto and SLSA write times.
fn rfc3339(at: Timestamp) -> String {
    i64::try_from(at.as_millis())
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| at.to_string(), |t| t.to_string())
}

fn subject(release: &AnyRelease) -> Result<Subject, AuditError> {
    let artifact = release.artifact().ok_or_else(|| AuditError::NotBuilt {
        release: release.id().to_string(),
    })?;
    Ok(Subject {
        name: artifact.name.clone(),
        digest: std::collections::BTreeMap::from([(
            artifact.digest.algorithm().as_str().to_owned(),
            artifact.digest.hex().to_owned(),
        )]),
    })
}

/// SLSA provenance (v1) of the release's build: the pipeline and revision it was built from,
/// the build step's stages with their times and outcomes, and the builder.
pub fn provenance(release: &AnyRelease, builder_id: &str) -> Result<Statement, AuditError> {
    let subject = subject(release)?;
    let build = release
        .steps()
        .iter()
        .rev()
        .find(|s| s.step == Step::Build && s.succeeded());
    let revision = release.revision();
    let mut invocation = String::new();
    let _ = write!(invocation, "{}/{}", release.pipeline(), release.id());
    let predicate = json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "pipeline": release.pipeline().as_str(),
                "release": release.id().as_str(),
                "revision": revision.id,
                "author": revision.author.as_str(),
                "triggeredBy": revision.triggered_by.as_ref().map(crate::id::Person::as_str),
            },
            "internalParameters": { "mode": release.mode().to_string() },
            "resolvedDependencies": [ { "uri": format!("revision:{}", revision.id) } ],
        },
        "runDetails": {
            "builder": { "id": builder_id },
            "metadata": {
                "invocationId": invocation,
                "startedOn": build.map(|b| rfc3339(b.started_at)),
                "finishedOn": build.map(|b| rfc3339(b.finished_at)),
            },
            "byproducts": build.map(|b| b.stages.iter().map(|s| json!({
                "name": s.id.as_str(),
                "annotations": { "status": s.status.to_string() },
            })).collect::<Vec<_>>()).unwrap_or_default(),
        },
    });
    Ok(Statement {
        statement_type: STATEMENT_TYPE.to_owned(),
        subject: vec![subject],
        predicate_type: SLSA_PROVENANCE.to_owned(),
        predicate,
    })
}

/// The human approval of a delivery release: who approved, why, when, until when, for which
/// digest and environment, and the `policy` it was counted under (its rules, as text).
pub fn approval(release: &AnyRelease, policy: &[String]) -> Result<Statement, AuditError> {
    let subject = subject(release)?;
    let record = release.approval().ok_or_else(|| AuditError::NotApproved {
        release: release.id().to_string(),
    })?;
    let predicate = json!({
        "pipeline": release.pipeline().as_str(),
        "release": release.id().as_str(),
        "environment": record.environment.as_str(),
        "digest": record.digest.to_string(),
        "policy": policy,
        "approver": record.approver.as_str(),
        "reason": record.reason,
        "issuedOn": rfc3339(record.issued_at),
        "expiresOn": rfc3339(record.expires_at),
        "selfApproved": record.self_approved,
        "triggererApproved": record.triggerer_approved,
        "signoffs": record.signoffs.iter().map(|s| json!({
            "person": s.person.as_str(),
            "reason": s.reason,
            "on": rfc3339(s.at),
            "rules": s.rules,
        })).collect::<Vec<_>>(),
    });
    Ok(Statement {
        statement_type: STATEMENT_TYPE.to_owned(),
        subject: vec![subject],
        predicate_type: APPROVAL_PREDICATE.to_owned(),
        predicate,
    })
}
