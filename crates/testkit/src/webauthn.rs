//! A software passkey authenticator for tests, standing in for the browser and the authenticator
//! together: it reads the options auth-svc writes (webauthn-rs's `{"publicKey": {...}}` JSON) and
//! answers with the WebAuthn Level 3 JSON of a `PublicKeyCredential`, as
//! `PublicKeyCredential.toJSON()` gives it.
//!
//! Credentials are ES256 (P-256 ECDSA, ring), discoverable (each keeps its user handle), with
//! "none" attestation. Each credential keeps its own signature counter, raised by one on every
//! assertion (a registration reports the counter as it stands, 0 for a new credential).
//!
//! The knobs let a test play an attacker or a broken authenticator: the origin the "browser"
//! reports, the relying party id whose hash the authenticator data carries, the user-verified and
//! backup flags, the counter (set it back, or clone the whole authenticator, to look like a copied
//! key), and the last assertion kept to replay.

use data_encoding::BASE64URL_NOPAD;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

/// auth-svc's default WebAuthn origin (`CAREMESH_AUTH_WEBAUTHN_ORIGIN`).
pub const DEFAULT_ORIGIN: &str = "https://localhost:8443";

/// COSE algorithm -7: ECDSA with SHA-256 (ES256).
const COSE_ES256: i64 = -7;

const FLAG_UP: u8 = 0x01;
const FLAG_UV: u8 = 0x04;
const FLAG_BE: u8 = 0x08;
const FLAG_BS: u8 = 0x10;
const FLAG_AT: u8 = 0x40;

/// Why the authenticator gave no answer (a browser would reject the promise).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthenticatorError {
    /// One of this authenticator's credentials is in `excludeCredentials` (the browser's
    /// InvalidStateError): it is already registered with this account.
    Excluded,
    /// No credential of this authenticator fits the request (the browser's NotAllowedError).
    NoCredential,
    /// The options are not something a browser would accept.
    BadOptions(String),
}

impl std::fmt::Display for AuthenticatorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthenticatorError::Excluded => f.write_str("a credential of this authenticator is excluded"),
            AuthenticatorError::NoCredential => f.write_str("no credential of this authenticator fits the request"),
            AuthenticatorError::BadOptions(why) => write!(f, "bad options: {why}"),
        }
    }
}

impl std::error::Error for AuthenticatorError {}

fn bad(why: impl Into<String>) -> AuthenticatorError {
    AuthenticatorError::BadOptions(why.into())
}

/// One discoverable credential.
#[derive(Clone)]
struct Credential {
    id: Vec<u8>,
    rp_id: String,
    user_handle: Vec<u8>,
    /// The private key, PKCS#8 (an `EcdsaKeyPair` is not `Clone`; a cloned authenticator must
    /// hold the same key).
    pkcs8: Vec<u8>,
    counter: u32,
}

/// A software authenticator holding discoverable ES256 credentials. Cloning it copies every key
/// and counter: the two copies are a cloned authenticator.
#[derive(Clone)]
pub struct SoftAuthenticator {
    origin: String,
    claimed_rp_id: Option<String>,
    user_verified: bool,
    backup_eligible: bool,
    backup_state: bool,
    credentials: Vec<Credential>,
    last_assertion: Option<Vec<u8>>,
}

impl std::fmt::Debug for SoftAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let credentials: Vec<(String, &str, u32)> = self
            .credentials
            .iter()
            .map(|credential| {
                (
                    BASE64URL_NOPAD.encode(&credential.id),
                    credential.rp_id.as_str(),
                    credential.counter,
                )
            })
            .collect();
        f.debug_struct("SoftAuthenticator")
            .field("origin", &self.origin)
            .field("claimed_rp_id", &self.claimed_rp_id)
            .field("user_verified", &self.user_verified)
            .field("backup_eligible", &self.backup_eligible)
            .field("backup_state", &self.backup_state)
            .field("credentials", &credentials)
            .finish_non_exhaustive()
    }
}

impl Default for SoftAuthenticator {
    fn default() -> Self {
        Self::new()
    }
}

impl SoftAuthenticator {
    /// An empty authenticator in a browser at [`DEFAULT_ORIGIN`], verifying its user, not synced.
    pub fn new() -> Self {
        Self::with_origin(DEFAULT_ORIGIN)
    }

    /// An empty authenticator in a browser at `origin`.
    pub fn with_origin(origin: &str) -> Self {
        Self {
            origin: origin.to_owned(),
            claimed_rp_id: None,
            user_verified: true,
            backup_eligible: false,
            backup_state: false,
            credentials: Vec::new(),
            last_assertion: None,
        }
    }

    /// The origin the client data reports from now on (a phishing page's, say).
    pub fn set_origin(&mut self, origin: &str) {
        origin.clone_into(&mut self.origin);
    }

    /// Hash `rp_id` into the authenticator data instead of the relying party id the options name
    /// (`None`: the options' own again). The credential is still chosen by the options' id.
    pub fn claim_rp_id(&mut self, rp_id: Option<&str>) {
        self.claimed_rp_id = rp_id.map(str::to_owned);
    }

    /// Whether the UV flag is set (the authenticator checked a PIN or biometric).
    pub fn set_user_verified(&mut self, verified: bool) {
        self.user_verified = verified;
    }

    /// The BE (backup eligible) and BS (backed up) flags, as a synced passkey sets them.
    pub fn set_backup(&mut self, eligible: bool, state: bool) {
        self.backup_eligible = eligible;
        self.backup_state = state;
    }

    /// The ids of the credentials held, oldest first.
    pub fn credential_ids(&self) -> Vec<Vec<u8>> {
        self.credentials
            .iter()
            .map(|credential| credential.id.clone())
            .collect()
    }

    /// A credential id as WebAuthn JSON and auth-svc's `Passkey.credential_id` write it.
    pub fn encode_id(credential_id: &[u8]) -> String {
        BASE64URL_NOPAD.encode(credential_id)
    }

    /// The signature counter of a credential as it stands (the next assertion reports one more).
    pub fn counter(&self, credential_id: &[u8]) -> Option<u32> {
        self.find(credential_id).map(|credential| credential.counter)
    }

    /// Sets a credential's counter (back, to look like a clone). False if it is not held.
    pub fn set_counter(&mut self, credential_id: &[u8], counter: u32) -> bool {
        match self
            .credentials
            .iter_mut()
            .find(|credential| credential.id == credential_id)
        {
            Some(credential) => {
                credential.counter = counter;
                true
            }
            None => false,
        }
    }

    /// A copy of the last assertion this authenticator produced, to replay.
    pub fn last_assertion(&self) -> Option<Vec<u8>> {
        self.last_assertion.clone()
    }

    fn find(&self, credential_id: &[u8]) -> Option<&Credential> {
        self.credentials
            .iter()
            .find(|credential| credential.id == credential_id)
    }

    /// `navigator.credentials.create` with `creation_options_json`: a new discoverable credential
    /// for the options' relying party and user (replacing one this authenticator held for the
    /// same pair), answered as registration JSON.
    pub fn create(&mut self, creation_options_json: &[u8]) -> Result<Vec<u8>, AuthenticatorError> {
        let options = public_key_options(creation_options_json)?;
        let rp_id = string_at(&options, &["rp", "id"])?;
        let challenge = binary_at(&options, &["challenge"])?;
        let user_handle = binary_at(&options, &["user", "id"])?;
        let offers_es256 = options
            .get("pubKeyCredParams")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no pubKeyCredParams"))?
            .iter()
            .any(|param| param.get("alg").and_then(Value::as_i64) == Some(COSE_ES256));
        if !offers_es256 {
            return Err(bad("ES256 (-7) is not among pubKeyCredParams"));
        }
        for excluded in descriptor_ids(&options, "excludeCredentials")? {
            if self
                .credentials
                .iter()
                .any(|credential| credential.id == excluded && credential.rp_id == rp_id)
            {
                return Err(AuthenticatorError::Excluded);
            }
        }

        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| bad("cannot generate a P-256 key"))?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| bad("cannot load the new P-256 key"))?;
        let mut id = vec![0_u8; 32];
        rng.fill(&mut id).map_err(|_| bad("no randomness"))?;
        let credential = Credential {
            id,
            rp_id: rp_id.clone(),
            user_handle,
            pkcs8: pkcs8.as_ref().to_vec(),
            counter: 0,
        };

        // Uncompressed SEC1 point: 0x04 || x || y.
        let point = key.public_key().as_ref();
        let (x, y) = match point {
            [0x04, coordinates @ ..] if coordinates.len() == 64 => coordinates.split_at(32),
            _ => return Err(bad("unexpected public key encoding")),
        };
        let mut cose_key = Vec::new();
        cbor_head(&mut cose_key, MAJOR_MAP, 5);
        // kty: EC2, alg: ES256, crv: P-256.
        for (label, value) in [(1, 2), (3, COSE_ES256), (-1, 1)] {
            cbor_int(&mut cose_key, label);
            cbor_int(&mut cose_key, value);
        }
        cbor_int(&mut cose_key, -2);
        cbor_bytes(&mut cose_key, x);
        cbor_int(&mut cose_key, -3);
        cbor_bytes(&mut cose_key, y);

        let mut auth_data = self.auth_data_head(&rp_id, FLAG_AT, credential.counter);
        auth_data.extend_from_slice(&[0_u8; 16]); // AAGUID: none
        let id_length = u16::try_from(credential.id.len()).map_err(|_| bad("credential id too long"))?;
        auth_data.extend_from_slice(&id_length.to_be_bytes());
        auth_data.extend_from_slice(&credential.id);
        auth_data.extend_from_slice(&cose_key);

        let mut attestation_object = Vec::new();
        cbor_head(&mut attestation_object, MAJOR_MAP, 3);
        cbor_text(&mut attestation_object, "fmt");
        cbor_text(&mut attestation_object, "none");
        cbor_text(&mut attestation_object, "attStmt");
        cbor_head(&mut attestation_object, MAJOR_MAP, 0);
        cbor_text(&mut attestation_object, "authData");
        cbor_bytes(&mut attestation_object, &auth_data);

        let client_data = self.client_data("webauthn.create", &challenge);
        let answer = credential_json(
            &credential.id,
            json!({
                "attestationObject": BASE64URL_NOPAD.encode(&attestation_object),
                "clientDataJSON": BASE64URL_NOPAD.encode(&client_data),
            }),
        )?;
        self.credentials
            .retain(|held| !(held.rp_id == credential.rp_id && held.user_handle == credential.user_handle));
        self.credentials.push(credential);
        Ok(answer)
    }

    /// `navigator.credentials.get` with `request_options_json`: an assertion by the first held
    /// credential the options allow (any of the relying party's when `allowCredentials` is empty,
    /// as for a passwordless sign-in).
    pub fn get(&mut self, request_options_json: &[u8]) -> Result<Vec<u8>, AuthenticatorError> {
        self.assert(request_options_json, None)
    }

    /// Like [`get`](Self::get), by the credential `credential_id` (which the options must allow).
    pub fn get_with(
        &mut self,
        request_options_json: &[u8],
        credential_id: &[u8],
    ) -> Result<Vec<u8>, AuthenticatorError> {
        self.assert(request_options_json, Some(credential_id))
    }

    fn assert(&mut self, request_options_json: &[u8], wanted: Option<&[u8]>) -> Result<Vec<u8>, AuthenticatorError> {
        let options = public_key_options(request_options_json)?;
        let rp_id = string_at(&options, &["rpId"])?;
        let challenge = binary_at(&options, &["challenge"])?;
        let allowed = descriptor_ids(&options, "allowCredentials")?;
        let index = self
            .credentials
            .iter()
            .position(|credential| {
                credential.rp_id == rp_id
                    && (allowed.is_empty() || allowed.contains(&credential.id))
                    && wanted.is_none_or(|wanted| credential.id == wanted)
            })
            .ok_or(AuthenticatorError::NoCredential)?;
        let credential = self
            .credentials
            .get_mut(index)
            .ok_or(AuthenticatorError::NoCredential)?;
        credential.counter = credential.counter.wrapping_add(1);
        let credential = credential.clone();

        let auth_data = self.auth_data_head(&rp_id, 0, credential.counter);
        let client_data = self.client_data("webauthn.get", &challenge);
        let mut signed = auth_data.clone();
        signed.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, &client_data).as_ref());
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &credential.pkcs8, &rng)
            .map_err(|_| bad("cannot load the credential's key"))?;
        let signature = key.sign(&rng, &signed).map_err(|_| bad("cannot sign"))?;

        let answer = credential_json(
            &credential.id,
            json!({
                "authenticatorData": BASE64URL_NOPAD.encode(&auth_data),
                "clientDataJSON": BASE64URL_NOPAD.encode(&client_data),
                "signature": BASE64URL_NOPAD.encode(signature.as_ref()),
                "userHandle": BASE64URL_NOPAD.encode(&credential.user_handle),
            }),
        )?;
        self.last_assertion = Some(answer.clone());
        Ok(answer)
    }

    /// SHA-256(rp id) ‖ flags ‖ counter: the authenticator data up to the attested credential.
    fn auth_data_head(&self, rp_id: &str, extra_flags: u8, counter: u32) -> Vec<u8> {
        let rp_id = self.claimed_rp_id.as_deref().unwrap_or(rp_id);
        let mut flags = FLAG_UP | extra_flags;
        if self.user_verified {
            flags |= FLAG_UV;
        }
        if self.backup_eligible {
            flags |= FLAG_BE;
        }
        if self.backup_state {
            flags |= FLAG_BS;
        }
        let mut data = ring::digest::digest(&ring::digest::SHA256, rp_id.as_bytes())
            .as_ref()
            .to_vec();
        data.push(flags);
        data.extend_from_slice(&counter.to_be_bytes());
        data
    }

    fn client_data(&self, kind: &str, challenge: &[u8]) -> Vec<u8> {
        // Key order as browsers write it; serde_json keeps insertion order only with a feature,
        // so the JSON is written by hand.
        format!(
            r#"{{"type":{},"challenge":"{}","origin":{},"crossOrigin":false}}"#,
            Value::from(kind),
            BASE64URL_NOPAD.encode(challenge),
            Value::from(self.origin.as_str()),
        )
        .into_bytes()
    }
}

/// A `PublicKeyCredential` as `toJSON()` writes it, with the authenticator's `response`.
fn credential_json(id: &[u8], response: Value) -> Result<Vec<u8>, AuthenticatorError> {
    let id = BASE64URL_NOPAD.encode(id);
    let credential = json!({
        "id": id,
        "rawId": id,
        "type": "public-key",
        "response": response,
        "extensions": {},
    });
    serde_json::to_vec(&credential).map_err(|error| bad(error.to_string()))
}

/// The `publicKey` member of webauthn-rs's options JSON (or the options themselves, unwrapped).
fn public_key_options(json: &[u8]) -> Result<Value, AuthenticatorError> {
    let mut value: Value = serde_json::from_slice(json).map_err(|error| bad(format!("not JSON: {error}")))?;
    match value.get_mut("publicKey") {
        Some(inner) => Ok(inner.take()),
        None => Ok(value),
    }
}

fn value_at<'a>(value: &'a Value, path: &[&str]) -> Result<&'a Value, AuthenticatorError> {
    path.iter()
        .try_fold(value, |value, key| value.get(key))
        .ok_or_else(|| bad(format!("no {}", path.join("."))))
}

fn string_at(value: &Value, path: &[&str]) -> Result<String, AuthenticatorError> {
    value_at(value, path)?
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| bad(format!("{} is not a string", path.join("."))))
}

fn binary_at(value: &Value, path: &[&str]) -> Result<Vec<u8>, AuthenticatorError> {
    decode(&string_at(value, path)?).ok_or_else(|| bad(format!("{} is not base64url", path.join("."))))
}

/// base64url, with or without padding (the form webauthn-rs writes).
fn decode(text: &str) -> Option<Vec<u8>> {
    BASE64URL_NOPAD.decode(text.trim_end_matches('=').as_bytes()).ok()
}

/// The ids of a list of credential descriptors (`excludeCredentials`, `allowCredentials`).
fn descriptor_ids(options: &Value, member: &str) -> Result<Vec<Vec<u8>>, AuthenticatorError> {
    let Some(list) = options.get(member) else {
        return Ok(Vec::new());
    };
    if list.is_null() {
        return Ok(Vec::new());
    }
    list.as_array()
        .ok_or_else(|| bad(format!("{member} is not a list")))?
        .iter()
        .map(|descriptor| binary_at(descriptor, &["id"]))
        .collect()
}

// The few CBOR items the attestation object needs (RFC 8949): unsigned and negative integers,
// byte and text strings, maps.

const MAJOR_UNSIGNED: u8 = 0;
const MAJOR_NEGATIVE: u8 = 1;
const MAJOR_BYTES: u8 = 2;
const MAJOR_TEXT: u8 = 3;
const MAJOR_MAP: u8 = 5;

/// A data item's head: the major type and its argument, in the shortest form.
fn cbor_head(out: &mut Vec<u8>, major: u8, argument: u64) {
    let major = major << 5;
    if argument < 24 {
        // Fits in the low five bits.
        out.push(major | u8::try_from(argument).unwrap_or(0));
    } else if let Ok(byte) = u8::try_from(argument) {
        out.extend_from_slice(&[major | 24, byte]);
    } else if let Ok(short) = u16::try_from(argument) {
        out.push(major | 25);
        out.extend_from_slice(&short.to_be_bytes());
    } else if let Ok(word) = u32::try_from(argument) {
        out.push(major | 26);
        out.extend_from_slice(&word.to_be_bytes());
    } else {
        out.push(major | 27);
        out.extend_from_slice(&argument.to_be_bytes());
    }
}

fn cbor_int(out: &mut Vec<u8>, value: i64) {
    match u64::try_from(value) {
        Ok(unsigned) => cbor_head(out, MAJOR_UNSIGNED, unsigned),
        // -1 - n is encoded as n.
        Err(_) => cbor_head(out, MAJOR_NEGATIVE, (-1 - value).unsigned_abs()),
    }
}

fn cbor_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    cbor_head(out, MAJOR_BYTES, u64::try_from(bytes.len()).unwrap_or(u64::MAX));
    out.extend_from_slice(bytes);
}

fn cbor_text(out: &mut Vec<u8>, text: &str) {
    cbor_head(out, MAJOR_TEXT, u64::try_from(text.len()).unwrap_or(u64::MAX));
    out.extend_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]

    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};

    /// A CBOR item as the tests read it back.
    #[derive(Clone, Debug, PartialEq)]
    enum Item {
        Int(i64),
        Bytes(Vec<u8>),
        Text(String),
        Map(Vec<(Item, Item)>),
    }

    impl Item {
        fn get(&self, key: &Item) -> &Item {
            let Item::Map(entries) = self else {
                panic!("not a map: {self:?}")
            };
            &entries
                .iter()
                .find(|(k, _)| k == key)
                .unwrap_or_else(|| panic!("no {key:?}"))
                .1
        }
        fn bytes(&self) -> &[u8] {
            let Item::Bytes(bytes) = self else {
                panic!("not bytes: {self:?}")
            };
            bytes
        }
    }

    /// Reads one item from the front of `input`, returning it and the rest.
    fn read(input: &[u8]) -> (Item, &[u8]) {
        let (first, mut rest) = input.split_first().expect("an item");
        let (major, info) = (first >> 5, first & 0x1f);
        let argument = match info {
            0..24 => u64::from(info),
            24..=27 => {
                let width = 1 << (info - 24);
                let (bytes, tail) = rest.split_at(width);
                rest = tail;
                bytes.iter().fold(0, |acc, byte| (acc << 8) | u64::from(*byte))
            }
            _ => panic!("indefinite or reserved length"),
        };
        let length = usize::try_from(argument).unwrap();
        match major {
            0 => (Item::Int(i64::try_from(argument).unwrap()), rest),
            1 => (Item::Int(-1 - i64::try_from(argument).unwrap()), rest),
            2 => (Item::Bytes(rest[..length].to_vec()), &rest[length..]),
            3 => (
                Item::Text(String::from_utf8(rest[..length].to_vec()).unwrap()),
                &rest[length..],
            ),
            5 => {
                let mut entries = Vec::new();
                for _ in 0..length {
                    let (key, tail) = read(rest);
                    let (value, tail) = read(tail);
                    entries.push((key, value));
                    rest = tail;
                }
                (Item::Map(entries), rest)
            }
            _ => panic!("major type {major} is not used here"),
        }
    }

    fn b64(value: &Value) -> Vec<u8> {
        decode(value.as_str().unwrap()).unwrap()
    }

    fn text(value: &str) -> Item {
        Item::Text(value.to_owned())
    }

    fn creation_options(challenge: &[u8], exclude: &[Vec<u8>]) -> Vec<u8> {
        serde_json::to_vec(&json!({"publicKey": {
            "rp": {"name": "caremesh", "id": "localhost"},
            "user": {"id": BASE64URL_NOPAD.encode(b"user-handle-0001"), "name": "jane", "displayName": "Jane"},
            "challenge": BASE64URL_NOPAD.encode(challenge),
            "pubKeyCredParams": [{"type": "public-key", "alg": -7}, {"type": "public-key", "alg": -257}],
            "excludeCredentials": exclude.iter().map(|id| json!({"type": "public-key", "id": BASE64URL_NOPAD.encode(id)})).collect::<Vec<_>>(),
            "authenticatorSelection": {"residentKey": "required", "userVerification": "required"},
            "attestation": "none",
        }}))
        .unwrap()
    }

    fn request_options(challenge: &[u8], allow: &[Vec<u8>]) -> Vec<u8> {
        serde_json::to_vec(&json!({"publicKey": {
            "challenge": BASE64URL_NOPAD.encode(challenge),
            "rpId": "localhost",
            "allowCredentials": allow.iter().map(|id| json!({"type": "public-key", "id": BASE64URL_NOPAD.encode(id)})).collect::<Vec<_>>(),
            "userVerification": "required",
        }}))
        .unwrap()
    }

    fn sha256(data: &[u8]) -> Vec<u8> {
        ring::digest::digest(&ring::digest::SHA256, data).as_ref().to_vec()
    }

    #[test]
    fn cbor_heads_use_the_shortest_form() {
        let encoded = |value: i64| {
            let mut out = Vec::new();
            cbor_int(&mut out, value);
            out
        };
        assert_eq!(encoded(2), [0x02]);
        assert_eq!(encoded(-7), [0x26]);
        assert_eq!(encoded(-1), [0x20]);
        assert_eq!(encoded(24), [0x18, 24]);
        assert_eq!(encoded(-300), [0x39, 0x01, 0x2b]);
        assert_eq!(encoded(70_000), [0x1a, 0x00, 0x01, 0x11, 0x70]);
        let mut out = Vec::new();
        cbor_bytes(&mut out, &[7; 300]);
        assert_eq!(&out[..3], [0x59, 0x01, 0x2c]);
    }

    #[test]
    fn a_registration_carries_the_challenge_origin_rp_hash_and_a_cose_p256_key() {
        let mut authenticator = SoftAuthenticator::new();
        let answer: Value =
            serde_json::from_slice(&authenticator.create(&creation_options(b"challenge-1", &[])).unwrap()).unwrap();
        assert_eq!(answer["type"], "public-key");
        assert_eq!(answer["id"], answer["rawId"]);
        let id = b64(&answer["id"]);
        assert_eq!(authenticator.credential_ids(), vec![id.clone()]);

        let client_data: Value = serde_json::from_slice(&b64(&answer["response"]["clientDataJSON"])).unwrap();
        assert_eq!(client_data["type"], "webauthn.create");
        assert_eq!(b64(&client_data["challenge"]), b"challenge-1");
        assert_eq!(client_data["origin"], DEFAULT_ORIGIN);
        assert_eq!(client_data["crossOrigin"], false);

        let attestation_object = b64(&answer["response"]["attestationObject"]);
        let (object, rest) = read(&attestation_object);
        assert!(rest.is_empty());
        assert_eq!(object.get(&text("fmt")), &text("none"));
        assert_eq!(object.get(&text("attStmt")), &Item::Map(Vec::new()));
        let auth_data = object.get(&text("authData")).bytes();
        assert_eq!(auth_data[..32], sha256(b"localhost"));
        assert_eq!(auth_data[32], FLAG_UP | FLAG_UV | FLAG_AT);
        assert_eq!(auth_data[33..37], [0, 0, 0, 0]);
        assert_eq!(auth_data[37..53], [0; 16]);
        assert_eq!(
            usize::from(u16::from_be_bytes([auth_data[53], auth_data[54]])),
            id.len()
        );
        assert_eq!(auth_data[55..55 + id.len()], id);
        let (key, rest) = read(&auth_data[55 + id.len()..]);
        assert!(rest.is_empty(), "nothing after the COSE key");
        assert_eq!(key.get(&Item::Int(1)), &Item::Int(2));
        assert_eq!(key.get(&Item::Int(3)), &Item::Int(-7));
        assert_eq!(key.get(&Item::Int(-1)), &Item::Int(1));
        assert_eq!(key.get(&Item::Int(-2)).bytes().len(), 32);
        assert_eq!(key.get(&Item::Int(-3)).bytes().len(), 32);

        // Already registered: the options exclude it.
        assert_eq!(
            authenticator.create(&creation_options(b"challenge-2", &[id])),
            Err(AuthenticatorError::Excluded)
        );
    }

    #[test]
    fn assertions_verify_under_the_registered_key_and_count_up() {
        let mut authenticator = SoftAuthenticator::new();
        authenticator.set_backup(true, true);
        let answer: Value =
            serde_json::from_slice(&authenticator.create(&creation_options(b"c", &[])).unwrap()).unwrap();
        let attestation_object = b64(&answer["response"]["attestationObject"]);
        let (object, _) = read(&attestation_object);
        let auth_data = object.get(&text("authData")).bytes();
        assert_eq!(auth_data[32], FLAG_UP | FLAG_UV | FLAG_BE | FLAG_BS | FLAG_AT);
        let id = b64(&answer["id"]);
        let (key, _) = read(&auth_data[55 + id.len()..]);
        let mut point = vec![0x04];
        point.extend_from_slice(key.get(&Item::Int(-2)).bytes());
        point.extend_from_slice(key.get(&Item::Int(-3)).bytes());
        let public_key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point);

        for (round, allow) in [(1_u32, vec![]), (2, vec![id.clone()])] {
            let assertion: Value =
                serde_json::from_slice(&authenticator.get(&request_options(b"login", &allow)).unwrap()).unwrap();
            assert_eq!(assertion["id"], answer["id"]);
            let response = &assertion["response"];
            assert_eq!(b64(&response["userHandle"]), b"user-handle-0001");
            let client_data = b64(&response["clientDataJSON"]);
            let parsed: Value = serde_json::from_slice(&client_data).unwrap();
            assert_eq!(parsed["type"], "webauthn.get");
            assert_eq!(b64(&parsed["challenge"]), b"login");
            let auth_data = b64(&response["authenticatorData"]);
            assert_eq!(auth_data.len(), 37, "no attested credential in an assertion");
            assert_eq!(auth_data[32], FLAG_UP | FLAG_UV | FLAG_BE | FLAG_BS);
            assert_eq!(auth_data[33..37], round.to_be_bytes());
            let mut signed = auth_data.clone();
            signed.extend_from_slice(&sha256(&client_data));
            public_key
                .verify(&signed, &b64(&response["signature"]))
                .expect("a valid signature");
            assert_eq!(
                authenticator.last_assertion().unwrap(),
                serde_json::to_vec(&assertion).unwrap()
            );
        }
        assert_eq!(authenticator.counter(&id), Some(2));

        // A clone holds the same key and counter; the knobs change what it claims.
        let mut clone = authenticator.clone();
        assert!(clone.set_counter(&id, 0));
        clone.set_origin("https://evil.example");
        clone.claim_rp_id(Some("evil.example"));
        clone.set_user_verified(false);
        let assertion: Value = serde_json::from_slice(&clone.get(&request_options(b"x", &[])).unwrap()).unwrap();
        let auth_data = b64(&assertion["response"]["authenticatorData"]);
        assert_eq!(auth_data[..32], sha256(b"evil.example"));
        assert_eq!(auth_data[32] & FLAG_UV, 0);
        assert_eq!(auth_data[33..37], 1_u32.to_be_bytes());
        let client_data: Value = serde_json::from_slice(&b64(&assertion["response"]["clientDataJSON"])).unwrap();
        assert_eq!(client_data["origin"], "https://evil.example");
        assert_eq!(authenticator.counter(&id), Some(2), "the original is unchanged");

        assert_eq!(
            authenticator.get(&request_options(b"y", &[b"someone else".to_vec()])),
            Err(AuthenticatorError::NoCredential)
        );
        assert!(matches!(
            authenticator.get(b"{}"),
            Err(AuthenticatorError::BadOptions(_))
        ));
    }
}
