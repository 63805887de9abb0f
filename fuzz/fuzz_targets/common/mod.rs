//! Fixed test material shared by the fuzz targets and the corpus generator
//! (`examples/gen_corpus.rs`). The key files in `fuzz/fixtures/` are throwaway test keys.
#![allow(dead_code)]

/// The user that sends the seed envelopes (its identity is `fixtures/sender_identity.json`).
pub const SENDER_USER_ID: &str = "fuzz-sender";
/// The fixed test device that opens envelopes and sealed user keys
/// (`fixtures/recipient_device.json`).
pub const RECIPIENT_USER_ID: &str = "fuzz-recipient";
/// Message id of every seed envelope.
pub const MESSAGE_ID: &str = "01936b2e-4c1a-7000-8000-000000000001";
/// Key id of the seed sealed user keys.
pub const USER_KEY_ID: &str = "01936b2e-4c1a-7000-8000-0000000000aa";

/// Seed of the Ed25519 key that signs the seed tokens.
pub const TOKEN_KEY_SEED: [u8; 32] = [7; 32];
/// The verifier's clock for tokens (Unix seconds).
pub const TOKEN_NOW: i64 = 1_700_000_100;

/// Seed and name of the Ed25519 key that signs the seed checkpoints.
pub const NOTE_KEY_SEED: [u8; 32] = [9; 32];
pub const NOTE_KEY_NAME: &str = "audit.caremesh.local";
pub const NOTE_ORIGIN: &str = "caremesh.local/audit/v1";

pub fn message_context() -> caremesh_crypto::MessageContext<'static> {
    caremesh_crypto::MessageContext {
        sender_user_id: SENDER_USER_ID,
        recipient_user_id: RECIPIENT_USER_ID,
        message_id: MESSAGE_ID,
    }
}

pub fn token_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&TOKEN_KEY_SEED)
}

pub fn note_signer() -> caremesh_tlog::checkpoint::NoteSigner {
    match caremesh_tlog::checkpoint::NoteSigner::new(
        NOTE_KEY_NAME,
        ed25519_dalek::SigningKey::from_bytes(&NOTE_KEY_SEED),
    ) {
        Ok(signer) => signer,
        Err(error) => panic!("fixture note signer: {error}"),
    }
}
