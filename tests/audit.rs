//! Audit exports: an approved, deployed release exports an in-toto statement with SLSA
//! provenance for its build and one for its approval, each signed in a DSSE envelope.

mod support;

use support::{block_on, clock, delivery_pipeline, staged};
use tollgate::audit::{
    self, APPROVAL_PREDICATE, AuditError, IN_TOTO_PAYLOAD, SLSA_PROVENANCE, STATEMENT_TYPE, Signer,
    Statement,
};

/// A signer for tests: the "signature" is a keyed SHA-256 of the message.
struct TestSigner;

impl Signer for TestSigner {
    fn key_id(&self) -> String {
        "test-key".to_owned()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, AuditError> {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(b"secret");
        h.update(message);
        Ok(h.finalize().to_vec())
    }
}

#[test]
fn a_deployed_release_exports_signed_provenance_and_approval_statements() {
    let clock = clock();
    let pipeline = delivery_pipeline(&clock);
    let (staged, artifact) = staged(&pipeline, "r1", "aaa");
    let approval = block_on(pipeline.sign_off("r1", "rita", "release notes checked")).unwrap();
    let approved = block_on(staged.approve(&pipeline, approval)).unwrap();
    let live = block_on(approved.deploy(&pipeline, &artifact)).unwrap();
    let record = block_on(pipeline.restore("r1")).unwrap().record().clone();
    assert_eq!(
        &record,
        live.record(),
        "export from what the journal re-derives"
    );

    let provenance = audit::provenance(&record, "https://ci.example/tollgate").unwrap();
    assert_eq!(provenance.statement_type, STATEMENT_TYPE);
    assert_eq!(provenance.predicate_type, SLSA_PROVENANCE);
    assert_eq!(provenance.subject.len(), 1);
    assert_eq!(provenance.subject[0].name, artifact.name);
    assert_eq!(
        provenance.subject[0].digest["sha256"],
        artifact.digest.hex()
    );
    let p = &provenance.predicate;
    assert_eq!(
        p["buildDefinition"]["externalParameters"]["revision"],
        "aaa"
    );
    assert_eq!(
        p["buildDefinition"]["externalParameters"]["pipeline"],
        "shop"
    );
    assert_eq!(
        p["runDetails"]["builder"]["id"],
        "https://ci.example/tollgate"
    );
    assert_eq!(p["runDetails"]["byproducts"][0]["name"], "compile");
    assert!(
        p["runDetails"]["metadata"]["startedOn"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    let policy: Vec<String> = pipeline
        .approval_policy()
        .rules()
        .iter()
        .map(ToString::to_string)
        .collect();
    let approval = audit::approval(&record, &policy).unwrap();
    assert_eq!(approval.predicate_type, APPROVAL_PREDICATE);
    assert_eq!(approval.predicate["approver"], "rita");
    assert_eq!(approval.predicate["environment"], "production");
    assert_eq!(approval.predicate["digest"], artifact.digest.to_string());
    assert_eq!(
        approval.predicate["signoffs"][0]["reason"],
        "release notes checked"
    );
    assert_eq!(approval.predicate["policy"][0], policy[0]);

    let envelope = approval.sign(&TestSigner).unwrap();
    assert_eq!(envelope.payload_type, IN_TOTO_PAYLOAD);
    let payload = envelope.payload_bytes().unwrap();
    let decoded: Statement = serde_json::from_slice(&payload).unwrap();
    assert_eq!(decoded, approval);
    let (keyid, sig) = envelope.signature_bytes().remove(0);
    assert_eq!(keyid, "test-key");
    let expected = TestSigner
        .sign(&audit::pre_authentication_encoding(
            IN_TOTO_PAYLOAD,
            &payload,
        ))
        .unwrap();
    assert_eq!(
        sig, expected,
        "the signature is over the DSSE pre-authentication encoding"
    );
}

#[test]
fn there_is_nothing_to_attest_before_the_build_or_without_an_approval() {
    let clock = clock();
    let pipeline = delivery_pipeline(&clock);
    let fresh = pipeline.start("r0", support::revision("aaa")).unwrap();
    assert!(matches!(
        audit::provenance(fresh.record(), "b"),
        Err(AuditError::NotBuilt { .. })
    ));
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    assert!(matches!(
        audit::approval(staged.record(), &[]),
        Err(AuditError::NotApproved { .. })
    ));
    assert_eq!(
        audit::pre_authentication_encoding("t", b"ab"),
        b"DSSEv1 1 t 2 ab".to_vec()
    );
}
