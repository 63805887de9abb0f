//! Input checks for records-svc, each with a stable reason and a message that says what to fix:
//! ids, FHIR resource types, policies (with the mandatory patient and emergency clauses, and that
//! the encapsulated key was made for the declared policy), envelopes, reason codes and page tokens.

use caremesh_proto::records::v1::RecordEnvelope;
use caremesh_runtime::Error;
use sha2::{Digest, Sha256};

/// Largest content ciphertext: 1 MiB of content plus the 16-byte tag.
pub const MAX_CIPHERTEXT_LEN: usize = 1024 * 1024 + TAG_LEN;
const TAG_LEN: usize = 16;
const NONCE_LEN: usize = 12;
/// Largest CP-ABE encapsulation (a 64-attribute policy needs well under this).
pub const MAX_ENCAPSULATED_KEY_LEN: usize = 256 * 1024;
const MAX_PARAMS_VERSION_LEN: usize = 128;
const MAX_KEY_ID_LEN: usize = 128;
const MAX_PATIENT_ID_LEN: usize = 100;
const MAX_REASON_LEN: usize = 64;
const SIGNATURE_LEN: usize = 64;
pub const DEFAULT_PAGE: u64 = 50;
pub const MAX_PAGE: u64 = 500;

/// The FHIR R4 resource types (4.0.1), i.e. what a record's `kind` may be.
pub const FHIR_R4_RESOURCE_TYPES: &[&str] = &[
    "Account",
    "ActivityDefinition",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Basic",
    "Binary",
    "BiologicallyDerivedProduct",
    "BodyStructure",
    "Bundle",
    "CapabilityStatement",
    "CarePlan",
    "CareTeam",
    "CatalogEntry",
    "ChargeItem",
    "ChargeItemDefinition",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "CodeSystem",
    "Communication",
    "CommunicationRequest",
    "CompartmentDefinition",
    "Composition",
    "ConceptMap",
    "Condition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "Device",
    "DeviceDefinition",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "EffectEvidenceSynthesis",
    "Encounter",
    "Endpoint",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EpisodeOfCare",
    "EventDefinition",
    "Evidence",
    "EvidenceVariable",
    "ExampleScenario",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "GraphDefinition",
    "Group",
    "GuidanceResponse",
    "HealthcareService",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "ImplementationGuide",
    "InsurancePlan",
    "Invoice",
    "Library",
    "Linkage",
    "List",
    "Location",
    "Measure",
    "MeasureReport",
    "Media",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationKnowledge",
    "MedicationRequest",
    "MedicationStatement",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "MessageDefinition",
    "MessageHeader",
    "MolecularSequence",
    "NamingSystem",
    "NutritionOrder",
    "Observation",
    "ObservationDefinition",
    "OperationDefinition",
    "OperationOutcome",
    "Organization",
    "OrganizationAffiliation",
    "Parameters",
    "Patient",
    "PaymentNotice",
    "PaymentReconciliation",
    "Person",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchDefinition",
    "ResearchElementDefinition",
    "ResearchStudy",
    "ResearchSubject",
    "RiskAssessment",
    "RiskEvidenceSynthesis",
    "Schedule",
    "SearchParameter",
    "ServiceRequest",
    "Slot",
    "Specimen",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "Subscription",
    "Substance",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "TerminologyCapabilities",
    "TestReport",
    "TestScript",
    "ValueSet",
    "VerificationResult",
    "VisionPrescription",
];

pub use caremesh_runtime::ids::check_uuid_v7;

/// A patient id: non-empty, short, and usable in a `patient:<id>` attribute.
pub fn check_patient_id(patient_id: &str) -> Result<(), Error> {
    if patient_id.is_empty() {
        return Err(Error::invalid_argument("PATIENT_ID_REQUIRED", "patient_id is required"));
    }
    let usable = patient_id.len() <= MAX_PATIENT_ID_LEN
        && caremesh_abe::validate_attribute(&format!("patient:{patient_id}")).is_ok();
    if usable {
        Ok(())
    } else {
        Err(Error::invalid_argument(
            "INVALID_PATIENT_ID",
            format!(
                "patient_id must be at most {MAX_PATIENT_ID_LEN} letters, digits, '-', '_', '.' or ':' (the patient's user id)"
            ),
        ))
    }
}

/// A record kind: a FHIR R4 resource type name.
pub fn check_kind(kind: &str) -> Result<(), Error> {
    if kind.is_empty() {
        return Err(Error::invalid_argument(
            "KIND_REQUIRED",
            "kind is required: the FHIR resource type of the content, e.g. Observation or Condition",
        ));
    }
    if FHIR_R4_RESOURCE_TYPES.contains(&kind) {
        return Ok(());
    }
    let pascal = kind.len() <= 64
        && kind.chars().next().is_some_and(|first| first.is_ascii_uppercase())
        && kind.chars().all(|character| character.is_ascii_alphanumeric());
    let shown: String = kind.chars().take(64).collect();
    let message = if pascal {
        format!(
            "kind {shown:?} is not a FHIR R4 resource type; use one such as Observation, Condition, MedicationRequest, AllergyIntolerance or DocumentReference"
        )
    } else {
        format!(
            "kind {shown:?} is not a FHIR resource type name (PascalCase, e.g. Observation, Condition, MedicationRequest)"
        )
    };
    Err(Error::invalid_argument("INVALID_KIND", message))
}

/// Checks a record policy (syntax, limits, and the `patient:`/`emergency:` clauses) and that
/// the encapsulated key was made for it. Returns the parsed policy.
pub fn check_policy(policy: &str, patient_id: &str, envelope: &RecordEnvelope) -> Result<caremesh_abe::Policy, Error> {
    if policy.is_empty() {
        return Err(Error::invalid_argument(
            "POLICY_REQUIRED",
            format!(
                "policy is required, e.g. (\"role:doctor\" and \"dept:cardiology\") or \"patient:{patient_id}\" or \"emergency:{patient_id}\""
            ),
        ));
    }
    let check = caremesh_abe::check_policy(policy, Some(patient_id));
    if let Some(problem) = check.error {
        let mut error = Error::invalid_argument(problem.reason, format!("invalid policy: {}", problem.message))
            .with_metadata("position", problem.position.to_string());
        if !problem.expected.is_empty() {
            error = error.with_metadata("expected", problem.expected);
        }
        return Err(error);
    }
    let parsed = caremesh_abe::Policy::parse(policy)
        .map_err(|error| Error::invalid_argument("INVALID_POLICY", format!("invalid policy: {error}")))?;
    let encapsulated =
        caremesh_crypto::policy_envelope::encapsulated_policy(&envelope.encapsulated_key).map_err(|_| {
            Error::invalid_argument(
                "INVALID_ENCAPSULATED_KEY",
                "envelope.encapsulated_key is not a valid CP-ABE encapsulation: seal the content again with the SDK",
            )
        })?;
    if encapsulated.canonical() != parsed.canonical() {
        return Err(Error::invalid_argument(
            "POLICY_MISMATCH",
            "envelope.encapsulated_key was made for another policy than `policy`: seal the content under the declared policy",
        ));
    }
    Ok(parsed)
}

/// The structure of a record envelope (its cryptographic contents are checked elsewhere).
pub fn check_envelope(envelope: Option<&RecordEnvelope>) -> Result<&RecordEnvelope, Error> {
    let envelope = envelope.ok_or_else(|| {
        Error::invalid_argument(
            "ENVELOPE_REQUIRED",
            "envelope is required: the content sealed under the policy",
        )
    })?;
    let bad = |problem: String| Error::invalid_argument("INVALID_ENVELOPE", format!("envelope: {problem}"));
    if envelope.version != caremesh_crypto::policy_envelope::POLICY_ENVELOPE_VERSION {
        return Err(bad(format!("version must be 1, got {}", envelope.version)));
    }
    if envelope.params_version.is_empty() || envelope.params_version.len() > MAX_PARAMS_VERSION_LEN {
        return Err(bad(format!(
            "params_version must name the ABE public parameters used (1 to {MAX_PARAMS_VERSION_LEN} bytes)"
        )));
    }
    if envelope.encapsulated_key.is_empty() {
        return Err(bad("encapsulated_key is required".to_owned()));
    }
    if envelope.encapsulated_key.len() > MAX_ENCAPSULATED_KEY_LEN {
        return Err(bad(format!(
            "encapsulated_key is {} bytes; at most {MAX_ENCAPSULATED_KEY_LEN} are accepted",
            envelope.encapsulated_key.len()
        )));
    }
    if envelope.nonce.len() != NONCE_LEN {
        return Err(bad(format!(
            "nonce must be {NONCE_LEN} bytes, got {}",
            envelope.nonce.len()
        )));
    }
    if envelope.ciphertext.len() < TAG_LEN {
        return Err(bad("ciphertext is shorter than the 16-byte tag".to_owned()));
    }
    if envelope.ciphertext.len() > MAX_CIPHERTEXT_LEN {
        return Err(bad(format!(
            "ciphertext is {} bytes; at most 1 MiB of content (plus the 16-byte tag) is accepted",
            envelope.ciphertext.len()
        )));
    }
    Ok(envelope)
}

/// The author's key id and signature, before verification.
pub fn check_signature_fields(key_id: &str, signature: &[u8]) -> Result<(), Error> {
    if key_id.is_empty() || key_id.len() > MAX_KEY_ID_LEN {
        return Err(Error::invalid_argument(
            "AUTHOR_KEY_REQUIRED",
            "author_identity_key_id is required: the id of your identity key that signed",
        ));
    }
    if signature.len() != SIGNATURE_LEN {
        return Err(Error::invalid_argument(
            "BAD_SIGNATURE",
            format!(
                "author_signature must be a 64-byte Ed25519 signature, got {} bytes",
                signature.len()
            ),
        ));
    }
    Ok(())
}

/// An entered-in-error reason code: `A`–`Z` and `_`, 1 to 64 characters.
pub fn check_reason(reason: &str) -> Result<(), Error> {
    let valid = !reason.is_empty()
        && reason.len() <= MAX_REASON_LEN
        && reason.bytes().all(|byte| byte.is_ascii_uppercase() || byte == b'_');
    if valid {
        Ok(())
    } else {
        Err(Error::invalid_argument(
            "INVALID_REASON",
            format!(
                "reason must be a code of 1 to {MAX_REASON_LEN} characters A-Z and '_', e.g. WRONG_PATIENT or DUPLICATE (never health data)"
            ),
        ))
    }
}

pub fn require_etag(etag: &str) -> Result<(), Error> {
    if etag.is_empty() {
        Err(Error::invalid_argument(
            "ETAG_REQUIRED",
            "etag is required: pass the etag of the record as you last read it",
        ))
    } else {
        Ok(())
    }
}

pub fn page_size(requested: i32) -> u64 {
    match u64::try_from(requested) {
        Ok(0) | Err(_) => DEFAULT_PAGE,
        Ok(size) => size.min(MAX_PAGE),
    }
}

/// A short digest of a listing's filters: page tokens are only valid for the same listing.
pub fn scope(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize().get(..8).unwrap_or_default())
}

/// Page tokens: `<scope>.<position>` in hex (opaque to clients).
pub fn encode_token(scope: &str, position: &str) -> String {
    hex::encode(format!("{scope}.{position}"))
}

pub fn decode_token(token: &str, scope: &str) -> Result<Option<String>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        Error::invalid_argument(
            "INVALID_PAGE_TOKEN",
            "the page token is not from this listing (same filters): start again without one",
        )
    };
    let text = hex::decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(invalid)?;
    text.strip_prefix(&format!("{scope}."))
        .filter(|position| !position.is_empty())
        .map(|position| Some(position.to_owned()))
        .ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn kinds_are_fhir_resource_types() {
        assert!(check_kind("Observation").is_ok());
        assert!(check_kind("MedicationRequest").is_ok());
        assert_eq!(check_kind("observation").unwrap_err().reason(), "INVALID_KIND");
        assert!(check_kind("Blood").unwrap_err().message().contains("not a FHIR R4"));
        assert_eq!(check_kind("").unwrap_err().reason(), "KIND_REQUIRED");
    }

    #[test]
    fn reasons_and_tokens() {
        assert!(check_reason("WRONG_PATIENT").is_ok());
        assert!(check_reason("wrong").is_err());
        assert!(check_reason(&"A".repeat(65)).is_err());
        let token = encode_token("abc", "12.x");
        assert_eq!(decode_token(&token, "abc").unwrap().as_deref(), Some("12.x"));
        assert!(decode_token(&token, "abd").is_err());
        assert!(decode_token("zz", "abc").is_err());
        assert_eq!(decode_token("", "abc").unwrap(), None);
    }
}
