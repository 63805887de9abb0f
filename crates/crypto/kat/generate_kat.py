#!/usr/bin/env python3
"""Independent re-implementation of caremesh-crypto's encodings (pyca/cryptography), producing the
known-answer values checked by `src/kat.rs`. It follows the crate documentation, not the Rust code,
so a mismatch means the code and the specification disagree.

Run: python3 crates/crypto/kat/generate_kat.py  (needs `cryptography`).
"""
import hashlib
import struct

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


def lp(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def lp64(b: bytes) -> bytes:
    return struct.pack(">Q", len(b)) + b


def seq(start: int, n: int = 32) -> bytes:
    return bytes((start + i) % 256 for i in range(n))


def x_pub(secret: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes(*RAW)


def x_dh(secret: bytes, public: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(secret).exchange(X25519PublicKey.from_public_bytes(public))


def ed_pub(seed: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(*RAW)


def ed_sign(seed: bytes, msg: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed).sign(msg)


ALICE, BOB = b"alice-kat-user", b"bob-kat-user"
MESSAGE_ID = b"01890a5d-ac96-7c4b-bcce-b302099a8057"
ALICE_IK_ID = b"01890a5d-ac96-7000-8000-00000000a11c"
BOB_IK_ID = b"01890a5d-ac96-7000-8000-000000000b0b"
BOB_SPK_ID = b"01890a5d-ac96-7000-8000-0000000005be"
BOB_OPK_ID = b"01890a5d-ac96-7000-8000-0000000000be"
ALICE_ED, ALICE_X = seq(0x00), seq(0x20)
BOB_ED, BOB_X, BOB_SPK, BOB_OPK = seq(0x40), seq(0x60), seq(0x80), seq(0xA0)
EPHEMERAL, NONCE = seq(0xC0), seq(0xE0, 12)
PLAINTEXT = b"caremesh KAT: hello Bob"


def identity_binding(seed, user, key_id, x_public):
    msg = lp(b"caremesh-key-signature-v1") + lp(b"identity-key") + lp(user) + lp(key_id) + lp(ed_pub(seed)) + lp(x_public)
    return ed_sign(seed, msg)


def spk_signature(seed, user, ik_id, spk_id, spk_public):
    msg = lp(b"caremesh-key-signature-v1") + lp(b"signed-prekey") + lp(user) + lp(ik_id) + lp(spk_id) + lp(spk_public)
    return ed_sign(seed, msg)


def seal(with_opk: bool) -> bytes:
    dh = [x_dh(ALICE_X, x_pub(BOB_SPK)), x_dh(EPHEMERAL, x_pub(BOB_X)), x_dh(EPHEMERAL, x_pub(BOB_SPK))]
    if with_opk:
        dh.append(x_dh(EPHEMERAL, x_pub(BOB_OPK)))
    ikm = b"\xff" * 32 + b"".join(dh)
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"\x00" * 32, info=b"caremesh-x3dh-v1").derive(ikm)
    aad = (
        lp(b"caremesh-x3dh-v1/aad")
        + struct.pack(">I", 1)
        + lp(ALICE)
        + lp(BOB)
        + lp(MESSAGE_ID)
        + lp(ALICE_IK_ID)
        + lp(ed_pub(ALICE_ED))
        + lp(x_pub(ALICE_X))
        + lp(BOB_IK_ID)
        + lp(ed_pub(BOB_ED))
        + lp(x_pub(BOB_X))
        + lp(BOB_SPK_ID)
        + lp(BOB_OPK_ID if with_opk else b"")
        + lp(x_pub(EPHEMERAL))
    )
    return AESGCM(key).encrypt(NONCE, PLAINTEXT, aad)


def party_digits(user: bytes, ed: bytes, x: bytes) -> str:
    h = hashlib.sha512(lp64(b"caremesh-safety-number-v1") + lp64(user) + lp64(ed) + lp64(x)).digest()
    for _ in range(5200):
        h = hashlib.sha512(h + ed + x).digest()
    return "".join("%05d" % (int.from_bytes(h[i : i + 5], "big") % 100000) for i in range(0, 30, 5))


def safety_number() -> str:
    a = party_digits(ALICE, ed_pub(ALICE_ED), x_pub(ALICE_X))
    b = party_digits(BOB, ed_pub(BOB_ED), x_pub(BOB_X))
    digits = a + b if a <= b else b + a
    return " ".join(digits[i : i + 5] for i in range(0, 60, 5))


def detached() -> bytes:
    msg = lp(b"caremesh-detached-signature-v1") + lp(b"caremesh-kat-v1") + b"a record envelope"
    return ed_sign(ALICE_ED, msg)


if __name__ == "__main__":
    values = {
        "BOB_IDENTITY_BINDING": identity_binding(BOB_ED, BOB, BOB_IK_ID, x_pub(BOB_X)).hex(),
        "BOB_SIGNED_PREKEY_SIGNATURE": spk_signature(BOB_ED, BOB, BOB_IK_ID, BOB_SPK_ID, x_pub(BOB_SPK)).hex(),
        "CIPHERTEXT_WITH_OPK": seal(True).hex(),
        "CIPHERTEXT_WITHOUT_OPK": seal(False).hex(),
        "SAFETY_NUMBER": safety_number(),
        "DETACHED_SIGNATURE": detached().hex(),
    }
    for name, value in values.items():
        print(f'const {name}: &str = "{value}";')
