#!/usr/bin/env python3
"""Known-answer test vectors for the caremesh messaging protocol, version 2.

An independent implementation of docs/protocol.md (§2-§8), written from that document alone
(not from the Rust code), that prints docs/vectors/protocol-v2.json (format:
docs/vectors/README.md) to stdout:

    python3 tools/vectorgen/vectorgen.py > docs/vectors/protocol-v2.json

Primitives: X25519, Ed25519, HKDF-SHA256, HMAC-SHA256 and AES-256-GCM from `cryptography`;
ML-KEM-768 from `kyber-py` (cross-checked against `cryptography`'s ML-KEM when its backend has
one); SHA-256 from `hashlib`.

Determinism: every secret or "random" input is derived from a name (see `derive`), ids are
UUIDv7 strings derived from a name (see `uuid7`), and the JSON is written in a fixed order, so
two runs give byte-identical output.
"""

import copy
import hashlib
import hmac as hmac_mod
import json
import sys
from collections import OrderedDict
from dataclasses import dataclass, replace
from importlib.metadata import version as package_version
from typing import Optional

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from kyber_py.ml_kem import ML_KEM_768

# ---------------------------------------------------------------------------------------------
# Deterministic inputs
# ---------------------------------------------------------------------------------------------

VECTOR_PREFIX = "caremesh-vectors/"

# Fixed 48-bit UUIDv7 timestamp: 2025-01-01T00:00:00Z in milliseconds since the Unix epoch.
UUID7_TIMESTAMP_MS = 1735689600000


def derive(name: str, length: int = 32) -> bytes:
    """The deterministic stand-in for `length` random bytes named `name`.

    length <= 32: SHA-256("caremesh-vectors/" + name)[:length].
    length  > 32: SHA-256("caremesh-vectors/" + name + "/1") || SHA-256(... + name + "/2") || ...
                  truncated to `length` (so a 64-byte ML-KEM seed is the "/1" hash || the "/2" hash).
    """
    if length <= 32:
        return hashlib.sha256((VECTOR_PREFIX + name).encode()).digest()[:length]
    out = b""
    counter = 1
    while len(out) < length:
        out += hashlib.sha256(f"{VECTOR_PREFIX}{name}/{counter}".encode()).digest()
        counter += 1
    return out[:length]


def uuid7(name: str) -> str:
    """A canonical UUIDv7 string derived from `name`.

    Bytes 0..6: the fixed 48-bit timestamp UUID7_TIMESTAMP_MS (big-endian); the remaining 74 bits
    (rand_a, rand_b) come from h = derive("uuid/" + name); version nibble 7, variant bits 10.
    """
    digest = derive("uuid/" + name)
    raw = bytearray(UUID7_TIMESTAMP_MS.to_bytes(6, "big") + digest[:10])
    raw[6] = 0x70 | (raw[6] & 0x0F)
    raw[8] = 0x80 | (raw[8] & 0x3F)
    x = raw.hex()
    return f"{x[0:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:32]}"


def is_canonical_uuid7(s: str) -> bool:
    if len(s) != 36 or s != s.lower() or [s[i] for i in (8, 13, 18, 23)] != ["-"] * 4:
        return False
    try:
        raw = bytes.fromhex(s.replace("-", ""))
    except ValueError:
        return False
    return len(raw) == 16 and raw[6] >> 4 == 7 and raw[8] >> 6 == 0b10


# ---------------------------------------------------------------------------------------------
# §2 Notation and primitives
# ---------------------------------------------------------------------------------------------


class ProtocolError(Exception):
    """An error of §12; `str(e)` is its name (e.g. "DecryptionFailed")."""


def u32be(n: int) -> bytes:
    return n.to_bytes(4, "big")


def u64be(n: int) -> bytes:
    return n.to_bytes(8, "big")


def b(x) -> bytes:
    """Strings (labels, ids) are UTF-8 bytes."""
    return x.encode("utf-8") if isinstance(x, str) else bytes(x)


def lp(x) -> bytes:
    """lp(x) = u32be(len(x)) || x."""
    x = b(x)
    return u32be(len(x)) + x


ZERO32 = bytes(32)


def x25519_public(secret: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()


def x25519(secret: bytes, public: bytes) -> bytes:
    """RFC 7748 X25519 (the secret is clamped at use); an all-zero output is NonContributory."""
    try:
        out = X25519PrivateKey.from_private_bytes(secret).exchange(
            X25519PublicKey.from_public_bytes(public))
    except ValueError:  # OpenSSL refuses an all-zero shared secret itself
        raise ProtocolError("NonContributory")
    if out == ZERO32:
        raise ProtocolError("NonContributory")
    return out


def ed25519_public(seed: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def ed25519_sign(seed: bytes, message: bytes) -> bytes:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    signature = key.sign(message)
    key.public_key().verify(signature, message)  # self-check
    return signature


def hkdf(salt: bytes, ikm: bytes, info, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=b(info)).derive(ikm)


def hmac(key: bytes, data: bytes) -> bytes:
    return hmac_mod.new(key, data, hashlib.sha256).digest()


def aead_encrypt(key: bytes, nonce: bytes, aad: bytes, pt: bytes) -> bytes:
    """AES-256-GCM, output ciphertext || 16-byte tag."""
    assert len(key) == 32 and len(nonce) == 12
    return AESGCM(key).encrypt(nonce, pt, aad)


def aead_decrypt(key: bytes, nonce: bytes, aad: bytes, ct: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(nonce, ct, aad)
    except (InvalidTag, ValueError):
        raise ProtocolError("DecryptionFailed")


def mlkem_keygen(seed: bytes):
    """ML-KEM-768 KeyGen_internal(d, z) from the 64-byte seed d || z: returns (ek, dk)."""
    assert len(seed) == 64
    ek, dk = ML_KEM_768._keygen_internal(seed[:32], seed[32:])
    assert len(ek) == 1184
    return ek, dk


def mlkem_encaps(ek: bytes, m: bytes):
    """ML-KEM-768 Encaps_internal(ek, m) (includes the FIPS 203 modulus check): returns (CT, SS)."""
    assert len(ek) == 1184 and len(m) == 32
    ss, ct = ML_KEM_768._encaps_internal(ek, m)  # kyber-py returns (K, c)
    assert len(ct) == 1088 and len(ss) == 32
    return ct, ss


def mlkem_decaps(dk: bytes, ct: bytes) -> bytes:
    """ML-KEM-768 Decaps (implicit rejection: never fails on a well-sized ciphertext)."""
    return ML_KEM_768.decaps(dk, ct)


def crosscheck_mlkem(seed: bytes, ek: bytes, pairs) -> None:
    """Second opinion from cryptography's ML-KEM-768 (OpenSSL), when the backend has it."""
    try:
        from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
        key = MLKEM768PrivateKey.from_seed_bytes(seed)
    except Exception:  # older cryptography or backend without ML-KEM: skip
        return
    assert key.public_key().public_bytes_raw() == ek
    for ct, ss in pairs:
        assert key.decapsulate(ct) == ss


# ---------------------------------------------------------------------------------------------
# §3 Keys
# ---------------------------------------------------------------------------------------------

KIND_SPK = "x25519-signed-prekey"
KIND_PQSPK = "ml-kem-768-last-resort-prekey"
KIND_PQOPK = "ml-kem-768-one-time-prekey"

KEM_KIND_LAST_RESORT = 1
KEM_KIND_ONE_TIME = 2
KEM_KIND_LABEL = {KEM_KIND_LAST_RESORT: KIND_PQSPK, KEM_KIND_ONE_TIME: KIND_PQOPK}


@dataclass(frozen=True)
class Identity:
    """An account identity (§3.1) and the user it belongs to."""
    user_id: str
    identity_key_id: str
    signing_seed: bytes
    dh_secret: bytes

    @property
    def signing_public(self) -> bytes:
        return ed25519_public(self.signing_seed)

    @property
    def dh_public(self) -> bytes:
        return x25519_public(self.dh_secret)


def make_identity(name: str) -> Identity:
    return Identity(
        user_id=uuid7(f"{name}/user-id"),
        identity_key_id=uuid7(f"{name}/identity-key-id"),
        signing_seed=derive(f"{name}/identity-signing-seed"),
        dh_secret=derive(f"{name}/identity-dh-secret"),
    )


def identity_binding_message(user_id: str, identity_key_id: str, sig_public: bytes,
                             dh_public: bytes) -> bytes:
    """§3.1 the message of the identity binding signature."""
    return (lp("caremesh-key-signature-v1") + lp("identity-key") + lp(user_id)
            + lp(identity_key_id) + lp(sig_public) + lp(dh_public))


def encode_identity(ik: Identity) -> bytes:
    """§3.1 Encode(IK) = lp(identity_key_id) lp(IKsig_public) lp(IKdh_public)."""
    return lp(ik.identity_key_id) + lp(ik.signing_public) + lp(ik.dh_public)


def device_key_message(kind_label: str, user_id: str, identity_key_id: str, device_id: str,
                       key_id: str, public_key: bytes) -> bytes:
    """§3.2 the message of a device key signature."""
    return (lp("caremesh-device-key-v1") + lp(kind_label) + lp(user_id) + lp(identity_key_id)
            + lp(device_id) + lp(key_id) + lp(public_key))


@dataclass(frozen=True)
class DeviceKeys:
    """One device's key material, all derived from names under `prefix`."""
    device_id: str
    spk_id: str
    spk_secret: bytes
    pqspk_id: str
    pqspk_seed: bytes
    pqopk_id: str
    pqopk_seed: bytes
    opk_id: str
    opk_secret: bytes


def make_device(prefix: str) -> DeviceKeys:
    return DeviceKeys(
        device_id=uuid7(f"{prefix}/device-id"),
        spk_id=uuid7(f"{prefix}/spk-id"),
        spk_secret=derive(f"{prefix}/spk-secret"),
        pqspk_id=uuid7(f"{prefix}/pqspk-id"),
        pqspk_seed=derive(f"{prefix}/pqspk-seed", 64),
        pqopk_id=uuid7(f"{prefix}/pqopk-id"),
        pqopk_seed=derive(f"{prefix}/pqopk-seed", 64),
        opk_id=uuid7(f"{prefix}/opk-id"),
        opk_secret=derive(f"{prefix}/opk-secret"),
    )


# ---------------------------------------------------------------------------------------------
# §4 Device list
# ---------------------------------------------------------------------------------------------

MAX_DEVICES = 10


def device_list_encoding(user_id: str, identity_key_id: str, version: int,
                         device_ids: list) -> bytes:
    """§4 the signed device list; the ids are sorted into ascending byte order."""
    ids = sorted(device_ids, key=b)
    if len(ids) == 0:
        raise ValueError("no devices")
    if len(ids) > MAX_DEVICES:
        raise ValueError("too many devices")
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate device")
    assert version >= 1
    out = (lp("caremesh-device-list-v1") + lp(user_id) + lp(identity_key_id) + u64be(version)
           + u32be(len(ids)))
    for device_id in ids:
        out += lp(device_id)
    return out


# ---------------------------------------------------------------------------------------------
# §5 PQXDH
# ---------------------------------------------------------------------------------------------

PQXDH_INFO = "caremesh-pqxdh-v1_CURVE25519_SHA-256_ML-KEM-768"


def pqxdh_sk(dh1: bytes, dh2: bytes, dh3: bytes, dh4: Optional[bytes], ss: bytes) -> bytes:
    ikm = b"\xff" * 32 + dh1 + dh2 + dh3 + (dh4 if dh4 is not None else b"") + ss
    return hkdf(ZERO32, ikm, PQXDH_INFO, 32)


def pqxdh_ad(ik_a: Identity, device_a: str, ik_b: Identity, device_b: str) -> bytes:
    return (lp("caremesh-pqxdh-v1/ad") + lp(ik_a.user_id) + lp(device_a) + encode_identity(ik_a)
            + lp(ik_b.user_id) + lp(device_b) + encode_identity(ik_b))


def pqxdh_initiator(ik_a: Identity, ik_b: Identity, spk_b: bytes, opk_b: Optional[bytes],
                    pqpk_b: bytes, ek_secret: bytes, m: bytes) -> dict:
    """§5.2: the initiator's side, from the bundle's public keys."""
    ek_public = x25519_public(ek_secret)
    dh1 = x25519(ik_a.dh_secret, spk_b)
    dh2 = x25519(ek_secret, ik_b.dh_public)
    dh3 = x25519(ek_secret, spk_b)
    dh4 = x25519(ek_secret, opk_b) if opk_b is not None else None
    ct, ss = mlkem_encaps(pqpk_b, m)
    return dict(ek_public=ek_public, dh1=dh1, dh2=dh2, dh3=dh3, dh4=dh4, ct=ct, ss=ss,
                sk=pqxdh_sk(dh1, dh2, dh3, dh4, ss))


def pqxdh_responder(ik_a: Identity, ik_b: Identity, ek_public: bytes, spk_secret: bytes,
                    opk_secret: Optional[bytes], pq_dk: bytes, ct: bytes) -> bytes:
    """§5.3: the responder's side; returns SK."""
    dh1 = x25519(spk_secret, ik_a.dh_public)
    dh2 = x25519(ik_b.dh_secret, ek_public)
    dh3 = x25519(spk_secret, ek_public)
    dh4 = x25519(opk_secret, ek_public) if opk_secret is not None else None
    ss = mlkem_decaps(pq_dk, ct)
    return pqxdh_sk(dh1, dh2, dh3, dh4, ss)


# ---------------------------------------------------------------------------------------------
# §6 Double Ratchet
# ---------------------------------------------------------------------------------------------

MAX_SKIP = 1000
MAX_SKIPPED_KEYS = 2000
REMEMBERED_RECEIVING_KEYS = 8


def kdf_rk(rk: bytes, dh_out: bytes):
    out = hkdf(rk, dh_out, "caremesh-ratchet-v1/root", 64)
    return out[:32], out[32:]


def kdf_ck(ck: bytes):
    """Returns (ck', mk)."""
    return hmac(ck, b"\x02"), hmac(ck, b"\x01")


def message_keys(mk: bytes):
    """Returns (aes_key, nonce)."""
    out = hkdf(ZERO32, mk, "caremesh-ratchet-v1/message-keys", 44)
    return out[:32], out[32:]


@dataclass(frozen=True)
class Preamble:
    sender_identity_key_id: str
    ephemeral_public: bytes
    spk_id: str
    opk_id: str  # "" when none
    kem_prekey_id: str
    kem_kind: int
    kem_ciphertext: bytes


@dataclass(frozen=True)
class Header:
    sender_device_id: str
    recipient_device_id: str
    dh: bytes
    pn: int
    n: int
    preamble: Optional[Preamble]


def preamble_bytes(p: Preamble) -> bytes:
    return (lp(p.sender_identity_key_id) + lp(p.ephemeral_public) + lp(p.spk_id) + lp(p.opk_id)
            + lp(p.kem_prekey_id) + u32be(p.kem_kind) + lp(p.kem_ciphertext))


def header_bytes(h: Header) -> bytes:
    out = (lp("caremesh-ratchet-v1/header") + lp(h.sender_device_id) + lp(h.recipient_device_id)
           + lp(h.dh) + u32be(h.pn) + u32be(h.n) + u32be(1 if h.preamble is not None else 0))
    if h.preamble is not None:
        out += preamble_bytes(h.preamble)
    return out


def ratchet_aad(ad: bytes, message_id: str, header: Header) -> bytes:
    return lp("caremesh-ratchet-v1/aad") + lp(ad) + lp(message_id) + header_bytes(header)


@dataclass(frozen=True)
class RatchetMessage:
    message_id: str
    header: Header
    ciphertext: bytes


class KeySource:
    """The vector's list of ratchet secrets, consumed in order.

    The position in the list is part of the ratchet state (it is copied with it), so a refused
    message does not consume a secret: "the state is unchanged" (§6.5).
    """

    def __init__(self, secrets: list):
        self.secrets = list(secrets)
        self.used = 0

    def next_key_pair(self):
        secret = self.secrets[self.used]
        self.used += 1
        return secret, x25519_public(secret)


class DoubleRatchet:
    """One session's Double Ratchet (§6), Signal's algorithm with §6.5's changes."""

    def __init__(self, ad: bytes, own_device_id: str, peer_device_id: str, keys: KeySource):
        self.ad = ad
        self.own_device_id = own_device_id
        self.peer_device_id = peer_device_id
        self.keys = keys
        self.dhs = None  # (secret, public)
        self.dhr = None
        self.rk = None
        self.cks = None
        self.ckr = None
        self.ns = self.nr = self.pn = 0
        self.mkskipped = OrderedDict()  # (dh_public, n) -> mk, oldest first
        self.earlier_receiving_keys = []  # previous DHr values, newest last, at most 8
        self.preamble = None

    # §6.2 Initialization
    @classmethod
    def initiator(cls, sk, ad, own_device_id, peer_device_id, spk_b_public, keys, preamble):
        s = cls(ad, own_device_id, peer_device_id, keys)
        s.dhs = keys.next_key_pair()
        s.dhr = spk_b_public
        s.rk, s.cks = kdf_rk(sk, x25519(s.dhs[0], s.dhr))
        s.preamble = preamble
        return s

    @classmethod
    def responder(cls, sk, ad, own_device_id, peer_device_id, spk_secret, keys):
        s = cls(ad, own_device_id, peer_device_id, keys)
        s.dhs = (spk_secret, x25519_public(spk_secret))
        s.rk = sk
        return s

    def snapshot(self):
        """Everything that must be unchanged after a refused message."""
        return (self.dhs, self.dhr, self.rk, self.cks, self.ckr, self.ns, self.nr, self.pn,
                list(self.mkskipped.items()), list(self.earlier_receiving_keys), self.preamble,
                self.keys.used)

    # §6.4 Sending
    def encrypt(self, message_id: str, plaintext: bytes) -> RatchetMessage:
        self.cks, mk = kdf_ck(self.cks)
        header = Header(self.own_device_id, self.peer_device_id, self.dhs[1], self.pn, self.ns,
                        self.preamble)
        self.ns += 1
        aes_key, nonce = message_keys(mk)
        ct = aead_encrypt(aes_key, nonce, ratchet_aad(self.ad, message_id, header), plaintext)
        return RatchetMessage(message_id, header, ct)

    # §6.5 Receiving
    def decrypt(self, msg: RatchetMessage) -> bytes:
        work = copy.deepcopy(self)
        plaintext = work._decrypt(msg)
        self.__dict__.update(work.__dict__)  # commit only after the AEAD authenticated
        return plaintext

    def _decrypt(self, msg: RatchetMessage) -> bytes:
        hd = msg.header
        # 1. a skipped key
        mk = self.mkskipped.pop((hd.dh, hd.n), None)
        if mk is None:
            # 2. an earlier receiving chain: its keys were used or skipped and deleted
            if hd.dh in self.earlier_receiving_keys:
                raise ProtocolError("DuplicateMessage")
            # 3. a new receiving chain: skip to pn, then the DH ratchet step
            if hd.dh != self.dhr:
                self._skip_message_keys(hd.pn)
                self._dh_ratchet(hd)
            # 4. skip to n, then the next key of the chain
            self._skip_message_keys(hd.n)
            if hd.n < self.nr:
                raise ProtocolError("DuplicateMessage")
            self.ckr, mk = kdf_ck(self.ckr)
            self.nr += 1
        aes_key, nonce = message_keys(mk)
        plaintext = aead_decrypt(aes_key, nonce, ratchet_aad(self.ad, msg.message_id, hd),
                                 msg.ciphertext)
        self.preamble = None  # a decrypted message clears the initiator's preamble
        return plaintext

    def _skip_message_keys(self, until: int) -> None:
        if self.ckr is None:
            return
        if until - self.nr > MAX_SKIP:
            raise ProtocolError("TooManySkipped")
        while self.nr < until:
            self.ckr, mk = kdf_ck(self.ckr)
            self.mkskipped[(self.dhr, self.nr)] = mk
            self.nr += 1
            while len(self.mkskipped) > MAX_SKIPPED_KEYS:
                self.mkskipped.popitem(last=False)  # the oldest is deleted

    def _dh_ratchet(self, hd: Header) -> None:
        if self.dhr is not None:
            self.earlier_receiving_keys.append(self.dhr)
            del self.earlier_receiving_keys[:-REMEMBERED_RECEIVING_KEYS]
        self.pn = self.ns
        self.ns = self.nr = 0
        self.dhr = hd.dh
        self.rk, self.ckr = kdf_rk(self.rk, x25519(self.dhs[0], self.dhr))
        self.dhs = self.keys.next_key_pair()
        self.rk, self.cks = kdf_rk(self.rk, x25519(self.dhs[0], self.dhr))


# ---------------------------------------------------------------------------------------------
# §6.6 Plaintext
# ---------------------------------------------------------------------------------------------

KIND_MESSAGE = 1
KIND_HISTORY_KEY = 2
KIND_SESSION_RESET = 3
KIND_ATTACHMENT = 4
MAX_MESSAGE_BODY = 256 * 1024 - 1024


def content_encoding(kind: int, body: bytes) -> bytes:
    assert kind in (KIND_MESSAGE, KIND_HISTORY_KEY, KIND_SESSION_RESET, KIND_ATTACHMENT)
    assert kind != KIND_MESSAGE or len(body) <= MAX_MESSAGE_BODY
    assert kind != KIND_SESSION_RESET or body == b""
    return lp("caremesh-content-v1") + u32be(kind) + lp(body)


def history_key_body(history_key_id: str, key: bytes) -> bytes:
    return lp(history_key_id) + lp(key)


def attachment_body(caption: bytes, attachment_id: str, key: bytes, digest: bytes, file_len: int,
                    media_type: str, file_name: str) -> bytes:
    assert len(caption) <= MAX_MESSAGE_BODY and len(key) == 32 and len(digest) == 32
    assert len(media_type.encode()) <= 255 and len(file_name.encode()) <= 255
    return (lp(caption) + lp(attachment_id) + lp(key) + lp(digest) + u64be(file_len)
            + lp(media_type) + lp(file_name))


# ---------------------------------------------------------------------------------------------
# §7 Archive copies
# ---------------------------------------------------------------------------------------------


def archive_key(hk: bytes, history_key_id: str, message_id: str) -> bytes:
    info = lp("caremesh-history-v1/key") + lp(history_key_id) + lp(message_id)
    return hkdf(ZERO32, hk, info, 32)


def archive_aad(owner_user_id, history_key_id, message_id, sender_user_id, sender_device_id,
                recipient_user_id) -> bytes:
    return (lp("caremesh-history-v1/aad") + lp(owner_user_id) + lp(history_key_id)
            + lp(message_id) + lp(sender_user_id) + lp(sender_device_id) + lp(recipient_user_id))


# ---------------------------------------------------------------------------------------------
# §8 Linking a device
# ---------------------------------------------------------------------------------------------

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def link_code(s: bytes) -> str:
    """The 10-byte link secret as 16 Crockford base32 characters, MSB first, XXXX-XXXX-XXXX-XXXX."""
    assert len(s) == 10
    v = int.from_bytes(s, "big")
    chars = "".join(CROCKFORD[(v >> (5 * (15 - i))) & 31] for i in range(16))
    return "-".join(chars[i:i + 4] for i in range(0, 16, 4))


def link_secret_from_code(code: str) -> bytes:
    v = 0
    for c in code.replace("-", ""):
        v = (v << 5) | CROCKFORD.index(c)
    return v.to_bytes(10, "big")


def link_commitment(user_id: str, device_id: str, e_public: bytes, s: bytes) -> bytes:
    return hashlib.sha256(lp("caremesh-link-v1/commitment") + lp(user_id) + lp(device_id)
                          + lp(e_public) + lp(s)).digest()


def seal_key_nonce(dh: bytes, s: bytes, user_id, device_id, e_public, e2_public):
    info = (lp("caremesh-link-v1/seal") + lp(user_id) + lp(device_id) + lp(e_public)
            + lp(e2_public))
    out = hkdf(ZERO32, dh + s, info, 44)
    return out[:32], out[32:]


def seal_aad(user_id, device_id, e_public, e2_public) -> bytes:
    return (lp("caremesh-link-v1/aad") + lp(user_id) + lp(device_id) + lp(e_public)
            + lp(e2_public))


def provisioning_plaintext(ik: Identity, history_keys: list, approver_device_id: str) -> bytes:
    """history_keys: [(history_key_id, key)], newest first, at least one."""
    assert len(history_keys) >= 1
    out = (lp("caremesh-provisioning-v1") + lp(ik.identity_key_id) + lp(ik.signing_seed)
           + lp(ik.dh_secret) + u32be(len(history_keys)))
    for hk_id, hk in history_keys:
        out += lp(hk_id) + lp(hk)
    return out + lp(approver_device_id)


# ---------------------------------------------------------------------------------------------
# The cast
# ---------------------------------------------------------------------------------------------

ALICE = make_identity("alice")
BOB = make_identity("bob")
ALICE_PHONE = make_device("alice/phone")
ALICE_LAPTOP = make_device("alice/laptop")
BOB_PHONE = make_device("bob/phone")


def h(x: bytes) -> str:
    return x.hex()


# ---------------------------------------------------------------------------------------------
# Sections of the vectors file
# ---------------------------------------------------------------------------------------------


def ml_kem_cases() -> list:
    cases = []
    for name in ("ml-kem-768 case 1", "ml-kem-768 case 2", "ml-kem-768 case 3"):
        seed = derive(f"{name}/seed", 64)
        m = derive(f"{name}/m")
        ek, dk = mlkem_keygen(seed)
        ct, ss = mlkem_encaps(ek, m)
        assert mlkem_decaps(dk, ct) == ss
        tampered = bytes([ct[0] ^ 0x01]) + ct[1:]
        tampered_ss = mlkem_decaps(dk, tampered)
        # FIPS 203 implicit rejection: K_bar = J(z || c) = SHAKE256(z || c, 32 bytes)
        assert tampered_ss == hashlib.shake_256(seed[32:] + tampered).digest(32) != ss
        crosscheck_mlkem(seed, ek, [(ct, ss), (tampered, tampered_ss)])
        cases.append({
            "name": name,
            "seed": h(seed),
            "m": h(m),
            "encapsulation_key": h(ek),
            "ciphertext": h(ct),
            "shared_secret": h(ss),
            "tampered_ciphertext": h(tampered),
            "tampered_shared_secret": h(tampered_ss),
        })
    return cases


def device_key_case(name: str, ik: Identity, dev: DeviceKeys) -> dict:
    binding = identity_binding_message(ik.user_id, ik.identity_key_id, ik.signing_public,
                                       ik.dh_public)
    keys = []
    for kind, key_id, secret in ((KIND_SPK, dev.spk_id, dev.spk_secret),
                                 (KIND_PQSPK, dev.pqspk_id, dev.pqspk_seed),
                                 (KIND_PQOPK, dev.pqopk_id, dev.pqopk_seed)):
        public = x25519_public(secret) if kind == KIND_SPK else mlkem_keygen(secret)[0]
        message = device_key_message(kind, ik.user_id, ik.identity_key_id, dev.device_id, key_id,
                                     public)
        keys.append({
            "kind_label": kind,
            "key_id": key_id,
            "secret": h(secret),
            "public_key": h(public),
            "message": h(message),
            "signature": h(ed25519_sign(ik.signing_seed, message)),
        })
    return {
        "name": name,
        "user_id": ik.user_id,
        "identity_key_id": ik.identity_key_id,
        "identity_signing_seed": h(ik.signing_seed),
        "identity_dh_secret": h(ik.dh_secret),
        "identity_signing_public": h(ik.signing_public),
        "identity_dh_public": h(ik.dh_public),
        "identity_binding_message": h(binding),
        "identity_binding_signature": h(ed25519_sign(ik.signing_seed, binding)),
        "device_id": dev.device_id,
        "keys": keys,
    }


def device_key_cases() -> list:
    return [device_key_case("bob phone", BOB, BOB_PHONE),
            device_key_case("alice laptop", ALICE, ALICE_LAPTOP)]


def device_list_cases() -> list:
    def case(name, ik, version, device_ids):
        out = {
            "name": name,
            "user_id": ik.user_id,
            "identity_key_id": ik.identity_key_id,
            "identity_signing_seed": h(ik.signing_seed),
            "version": version,
            "device_ids": device_ids,
        }
        try:
            encoding = device_list_encoding(ik.user_id, ik.identity_key_id, version, device_ids)
        except ValueError as e:
            out["error"] = str(e)
            return out
        out["encoding"] = h(encoding)
        out["signature"] = h(ed25519_sign(ik.signing_seed, encoding))
        return out

    three = [ALICE_PHONE.device_id, ALICE_LAPTOP.device_id, uuid7("alice/tablet/device-id")]
    three_unsorted = sorted(three, reverse=True)
    assert three_unsorted != sorted(three)
    ten = [uuid7(f"bob/device-{i}/device-id") for i in range(1, 10)] + [BOB_PHONE.device_id]
    assert ten != sorted(ten)
    eleven = ten + [uuid7("bob/device-11/device-id")]
    return [
        case("three devices, unsorted input", ALICE, 1, three_unsorted),
        case("ten devices", BOB, 7, ten),
        case("one device", BOB, 1, [BOB_PHONE.device_id]),
        case("duplicate device", ALICE, 2, [ALICE_PHONE.device_id, ALICE_LAPTOP.device_id,
                                            ALICE_PHONE.device_id]),
        case("too many devices", BOB, 8, eleven),
        case("no devices", ALICE, 3, []),
    ]


def party(ik: Identity, dev: DeviceKeys) -> dict:
    return {
        "user_id": ik.user_id,
        "device_id": dev.device_id,
        "identity_key_id": ik.identity_key_id,
        "identity_signing_seed": h(ik.signing_seed),
        "identity_dh_secret": h(ik.dh_secret),
    }


@dataclass
class PqxdhSession:
    """What a ratchet case needs from a PQXDH case."""
    sk: bytes
    ad: bytes
    initiator_device_id: str
    responder_device_id: str
    responder_spk_secret: bytes
    preamble: Preamble


def pqxdh_case(name, ik_a, dev_a, ik_b, dev_b, with_opk: bool, kem_kind: int):
    spk_public = x25519_public(dev_b.spk_secret)
    opk_secret = dev_b.opk_secret if with_opk else None
    kem_seed = dev_b.pqopk_seed if kem_kind == KEM_KIND_ONE_TIME else dev_b.pqspk_seed
    kem_id = dev_b.pqopk_id if kem_kind == KEM_KIND_ONE_TIME else dev_b.pqspk_id
    ek_pq, dk_pq = mlkem_keygen(kem_seed)
    ek_secret = derive(f"{name}/initiator-ephemeral-secret")
    m = derive(f"{name}/kem-m")

    r = pqxdh_initiator(ik_a, ik_b, spk_public,
                        x25519_public(opk_secret) if with_opk else None, ek_pq, ek_secret, m)
    ad = pqxdh_ad(ik_a, dev_a.device_id, ik_b, dev_b.device_id)
    # the responder computes the same SK
    assert pqxdh_responder(ik_a, ik_b, r["ek_public"], dev_b.spk_secret, opk_secret, dk_pq,
                           r["ct"]) == r["sk"]

    case = {
        "name": name,
        "initiator": party(ik_a, dev_a),
        "responder": party(ik_b, dev_b),
        "responder_spk_secret": h(dev_b.spk_secret),
        "responder_opk_secret": h(opk_secret) if with_opk else None,
        "responder_kem_seed": h(kem_seed),
        "responder_kem_kind": kem_kind,
        "initiator_ephemeral_secret": h(ek_secret),
        "kem_m": h(m),
        "expected": {
            "dh1": h(r["dh1"]),
            "dh2": h(r["dh2"]),
            "dh3": h(r["dh3"]),
            "dh4": h(r["dh4"]) if with_opk else None,
            "kem_ciphertext": h(r["ct"]),
            "kem_shared_secret": h(r["ss"]),
            "sk": h(r["sk"]),
            "ad": h(ad),
        },
    }
    session = PqxdhSession(
        sk=r["sk"], ad=ad, initiator_device_id=dev_a.device_id,
        responder_device_id=dev_b.device_id, responder_spk_secret=dev_b.spk_secret,
        preamble=Preamble(
            sender_identity_key_id=ik_a.identity_key_id, ephemeral_public=r["ek_public"],
            spk_id=dev_b.spk_id, opk_id=dev_b.opk_id if with_opk else "", kem_prekey_id=kem_id,
            kem_kind=kem_kind, kem_ciphertext=r["ct"]))
    return case, session


def pqxdh_cases():
    c1, s1 = pqxdh_case("alice phone to bob phone, with OPK and one-time ML-KEM prekey",
                        ALICE, ALICE_PHONE, BOB, BOB_PHONE, True, KEM_KIND_ONE_TIME)
    c2, s2 = pqxdh_case("alice phone to bob phone, no OPK, last-resort ML-KEM prekey",
                        ALICE, ALICE_PHONE, BOB, BOB_PHONE, False, KEM_KIND_LAST_RESORT)
    c3, _ = pqxdh_case("alice laptop to alice phone (own device), no OPK, one-time ML-KEM prekey",
                       ALICE, ALICE_LAPTOP, ALICE, ALICE_PHONE, False, KEM_KIND_ONE_TIME)
    return [c1, c2, c3], [s1, s2]


class RatchetScript:
    """Runs a conversation between A (initiator) and B (responder) and records its steps."""

    def __init__(self, name: str, session: PqxdhSession, n_initiator_keys: int,
                 n_responder_keys: int):
        self.name = name
        self.session = session
        self.initiator_secrets = [derive(f"{name}/initiator-ratchet-secret-{i}")
                                  for i in range(n_initiator_keys)]
        self.responder_secrets = [derive(f"{name}/responder-ratchet-secret-{i}")
                                  for i in range(n_responder_keys)]
        self.parties = {
            "A": DoubleRatchet.initiator(
                session.sk, session.ad, session.initiator_device_id,
                session.responder_device_id, x25519_public(session.responder_spk_secret),
                KeySource(self.initiator_secrets), session.preamble),
            "B": DoubleRatchet.responder(
                session.sk, session.ad, session.responder_device_id,
                session.initiator_device_id, session.responder_spk_secret,
                KeySource(self.responder_secrets)),
        }
        self.sent = {}
        self.steps = []

    def send(self, who: str, label: str, text: str, kind: int = KIND_MESSAGE) -> None:
        message_id = uuid7(f"{self.name}/{label}/message-id")
        plaintext = content_encoding(kind, text.encode())
        msg = self.parties[who].encrypt(message_id, plaintext)
        self.sent[label] = (msg, plaintext)
        hd = msg.header
        self.steps.append({
            "send": who,
            "label": label,
            "message_id": message_id,
            "plaintext": h(plaintext),
            "expected": {
                "dh": h(hd.dh),
                "pn": hd.pn,
                "n": hd.n,
                "has_preamble": hd.preamble is not None,
                "header": h(header_bytes(hd)),
                "aad": h(ratchet_aad(self.session.ad, message_id, hd)),
                "ciphertext": h(msg.ciphertext),
            },
        })

    def receive(self, who: str, label: str) -> None:
        msg, plaintext = self.sent[label]
        assert self.parties[who].decrypt(msg) == plaintext
        self.steps.append({"receive": who, "label": label})

    def refuse(self, who: str, label: str, error: str, tamper: Optional[str] = None) -> None:
        msg, _ = self.sent[label]
        step = {"receive": who, "label": label}
        if tamper is not None:
            msg, value = tampered(msg, tamper)
            step["tamper"] = {"field": tamper, "value": value}
        state = self.parties[who]
        before = state.snapshot()
        try:
            state.decrypt(msg)
        except ProtocolError as e:
            assert str(e) == error, (label, tamper, str(e), error)
        else:
            raise AssertionError(f"{label} with tamper {tamper} was accepted")
        assert state.snapshot() == before, "state changed on a refused message"
        step["error"] = error
        self.steps.append(step)

    def case(self) -> dict:
        # every listed secret is used, except possibly a spare one at the end (see case 2)
        s = self.session
        p = s.preamble
        return {
            "name": self.name,
            "sk": h(s.sk),
            "ad": h(s.ad),
            "initiator_device_id": s.initiator_device_id,
            "responder_device_id": s.responder_device_id,
            "responder_spk_secret": h(s.responder_spk_secret),
            "preamble": {
                "sender_identity_key_id": p.sender_identity_key_id,
                "ephemeral_public": h(p.ephemeral_public),
                "spk_id": p.spk_id,
                "opk_id": p.opk_id,
                "kem_prekey_id": p.kem_prekey_id,
                "kem_kind": p.kem_kind,
                "kem_ciphertext": h(p.kem_ciphertext),
            },
            "initiator_ratchet_secrets": [h(x) for x in self.initiator_secrets],
            "responder_ratchet_secrets": [h(x) for x in self.responder_secrets],
            "steps": self.steps,
        }


def tampered(msg: RatchetMessage, field: str):
    """The tampered message and the tampered value recorded in the vector:

    ciphertext: last byte xor 0x01; header_dh: first byte xor 0x01; header_n: n + 1;
    message_id: last hex digit xor 1 (still a canonical UUIDv7).
    """
    if field == "ciphertext":
        ct = msg.ciphertext[:-1] + bytes([msg.ciphertext[-1] ^ 0x01])
        return replace(msg, ciphertext=ct), h(ct)
    if field == "header_dh":
        dh = bytes([msg.header.dh[0] ^ 0x01]) + msg.header.dh[1:]
        return replace(msg, header=replace(msg.header, dh=dh)), h(dh)
    if field == "header_n":
        n = msg.header.n + 1
        return replace(msg, header=replace(msg.header, n=n)), n
    if field == "message_id":
        mid = msg.message_id[:-1] + format(int(msg.message_id[-1], 16) ^ 1, "x")
        assert is_canonical_uuid7(mid) and mid != msg.message_id
        return replace(msg, message_id=mid), mid
    raise ValueError(field)


def ratchet_cases(sessions) -> list:
    # Case 1: in order, both directions.
    r1 = RatchetScript("in order, both directions", sessions[0], 2, 2)
    r1.send("A", "a1", "hello bob")
    r1.send("A", "a2", "are you there?")
    r1.receive("B", "a1")
    r1.receive("B", "a2")
    r1.send("B", "b1", "hi alice")
    r1.send("B", "b2", "yes, I am here")
    r1.receive("A", "b1")
    r1.receive("A", "b2")
    r1.send("A", "a3", "good, no preamble any more")
    r1.receive("B", "a3")
    assert r1.parties["A"].keys.used == 2 and r1.parties["B"].keys.used == 2

    # Case 2: out of order, replay and tampering.
    # The responder's list has one spare secret at the end: the refused header_dh message comes
    # after B's last DH ratchet step, so the results are the same whether or not an
    # implementation draws (and throws away) a key pair for it.
    r2 = RatchetScript("out of order, replay and tampering", sessions[1], 3, 3)
    r2.send("A", "a1", "one")
    r2.send("A", "a2", "two")
    r2.send("A", "a3", "three")
    r2.receive("B", "a3")                    # B's first message: skips a1, a2
    r2.receive("B", "a1")                    # from the skipped keys
    r2.send("B", "b1", "got one and three")
    r2.receive("A", "b1")                    # A: DH ratchet, preamble cleared
    r2.send("A", "a4", "four, on a new chain")  # pn = 3, n = 0
    r2.receive("B", "a4")                    # B: DH ratchet; a2's key stays skipped
    r2.receive("B", "a2")                    # a skipped key of the old chain
    r2.refuse("B", "a1", "DuplicateMessage")  # replay on an earlier receiving chain
    r2.refuse("B", "a4", "DuplicateMessage")  # replay on the current receiving chain
    r2.send("A", "a5", "five")
    r2.refuse("B", "a5", "DecryptionFailed", tamper="ciphertext")
    r2.refuse("B", "a5", "DecryptionFailed", tamper="header_n")
    r2.refuse("B", "a5", "DecryptionFailed", tamper="message_id")
    r2.receive("B", "a5")                    # the untampered message still opens
    r2.send("A", "a6", "six")
    r2.send("A", "a7", "seven")
    r2.receive("B", "a7")                    # skips a6
    r2.refuse("B", "a6", "DecryptionFailed", tamper="ciphertext")  # skipped key kept
    r2.receive("B", "a6")
    r2.send("A", "a8", "eight")
    r2.refuse("B", "a8", "DecryptionFailed", tamper="header_dh")
    r2.receive("B", "a8")
    r2.send("B", "b2", "all of them")
    r2.receive("A", "b2")                    # A: DH ratchet (third initiator secret)
    r2.refuse("A", "b1", "DuplicateMessage")
    assert r2.parties["A"].keys.used == 3 and r2.parties["B"].keys.used == 2
    return [r1.case(), r2.case()]


def content_cases() -> list:
    hk_id = uuid7("alice/history-key-2/id")
    hk = derive("alice/history-key-2/key")
    cases = [
        ("message", KIND_MESSAGE, "Blood pressure 120/80, see you Tuesday.".encode()),
        ("empty message", KIND_MESSAGE, b""),
        ("history key", KIND_HISTORY_KEY, history_key_body(hk_id, hk)),
        ("session reset", KIND_SESSION_RESET, b""),
        ("attachment", KIND_ATTACHMENT,
         attachment_body("Photo of the rash, taken this morning.".encode(), uuid7("alice/attachment-1/id"),
                         derive("alice/attachment-1/key"), derive("alice/attachment-1/digest"),
                         1_234_567, "image/jpeg", "rash-2026-12-03.jpg")),
    ]
    return [{"name": name, "kind": kind, "body": h(body),
             "encoding": h(content_encoding(kind, body))} for name, kind, body in cases]


def archive_case(name, owner: Identity, hk_name: str, sender: Identity, sender_device: str,
                 recipient: Identity, text: str) -> dict:
    hk = derive(f"{hk_name}/key")
    hk_id = uuid7(f"{hk_name}/id")
    message_id = uuid7(f"{name}/message-id")
    nonce = derive(f"{name}/nonce", 12)
    plaintext = content_encoding(KIND_MESSAGE, text.encode())
    key = archive_key(hk, hk_id, message_id)
    aad = archive_aad(owner.user_id, hk_id, message_id, sender.user_id, sender_device,
                      recipient.user_id)
    ct = aead_encrypt(key, nonce, aad, plaintext)
    assert aead_decrypt(key, nonce, aad, ct) == plaintext
    return {
        "name": name,
        "history_key": h(hk),
        "history_key_id": hk_id,
        "message_id": message_id,
        "owner_user_id": owner.user_id,
        "sender_user_id": sender.user_id,
        "sender_device_id": sender_device,
        "recipient_user_id": recipient.user_id,
        "nonce": h(nonce),
        "plaintext": h(plaintext),
        "archive_key": h(key),
        "aad": h(aad),
        "ciphertext": h(ct),
    }


def archive_cases() -> list:
    return [
        archive_case("sender's copy (alice to bob, alice's history key)", ALICE,
                     "alice/history-key-2", ALICE, ALICE_PHONE.device_id, BOB,
                     "Appointment moved to 10:30."),
        archive_case("recipient's copy (alice to bob, bob's history key)", BOB,
                     "bob/history-key-1", ALICE, ALICE_PHONE.device_id, BOB,
                     "Appointment moved to 10:30."),
        archive_case("note to own devices (alice laptop to alice)", ALICE,
                     "alice/history-key-2", ALICE, ALICE_LAPTOP.device_id, ALICE,
                     "Reminder: refill prescription."),
    ]


def provisioning_case(name: str, ik: Identity, new_device_name: str, approver: DeviceKeys,
                      history_key_names: list) -> dict:
    device_id = uuid7(f"{name}/{new_device_name}/device-id")
    s = derive(f"{name}/link-secret", 10)
    code = link_code(s)
    assert link_secret_from_code(code) == s
    e_secret = derive(f"{name}/new-device-secret")
    e_public = x25519_public(e_secret)
    commitment = link_commitment(ik.user_id, device_id, e_public, s)
    e2_secret = derive(f"{name}/approver-secret")
    e2_public = x25519_public(e2_secret)
    history_keys = [(uuid7(f"{n}/id"), derive(f"{n}/key")) for n in history_key_names]
    plaintext = provisioning_plaintext(ik, history_keys, approver.device_id)
    dh = x25519(e2_secret, e_public)
    assert dh == x25519(e_secret, e2_public)
    key, nonce = seal_key_nonce(dh, s, ik.user_id, device_id, e_public, e2_public)
    aad = seal_aad(ik.user_id, device_id, e_public, e2_public)
    sealed = aead_encrypt(key, nonce, aad, plaintext)
    assert aead_decrypt(key, nonce, aad, sealed) == plaintext
    return {
        "name": name,
        "user_id": ik.user_id,
        "device_id": device_id,
        "link_secret": h(s),
        "code": code,
        "new_device_secret": h(e_secret),
        "new_device_public": h(e_public),
        "commitment": h(commitment),
        "approver_secret": h(e2_secret),
        "approver_public": h(e2_public),
        "identity_key_id": ik.identity_key_id,
        "identity_signing_seed": h(ik.signing_seed),
        "identity_dh_secret": h(ik.dh_secret),
        "history_keys": [{"history_key_id": i, "key": h(k)} for i, k in history_keys],
        "approver_device_id": approver.device_id,
        "plaintext": h(plaintext),
        "key": h(key),
        "nonce": h(nonce),
        "aad": h(aad),
        "sealed": h(sealed),
    }


def provisioning_cases() -> list:
    return [
        provisioning_case("alice links a tablet, two history keys", ALICE, "tablet",
                          ALICE_PHONE, ["alice/history-key-2", "alice/history-key-1"]),
        provisioning_case("bob links a laptop, one history key", BOB, "laptop", BOB_PHONE,
                          ["bob/history-key-1"]),
    ]


# ---------------------------------------------------------------------------------------------


def all_ids(obj):
    """Every value of a key named *_id or *_ids (for the UUIDv7 self-check)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if (k.endswith("_id") or k == "device_ids") and v not in ("", None):
                yield from (v if isinstance(v, list) else [v])
            elif k == "value" and isinstance(v, str) and len(v) == 36:
                yield v
            else:
                yield from all_ids(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from all_ids(v)


def main() -> None:
    pqxdh, sessions = pqxdh_cases()
    doc = {
        "protocol": "caremesh-v2",
        "generator": (f"tools/vectorgen/vectorgen.py (cryptography {package_version('cryptography')}"
                      f", kyber-py {package_version('kyber-py')})"),
        "ml_kem_768": ml_kem_cases(),
        "device_keys": device_key_cases(),
        "device_lists": device_list_cases(),
        "pqxdh": pqxdh,
        "ratchet": ratchet_cases(sessions),
        "content": content_cases(),
        "archive": archive_cases(),
        "provisioning": provisioning_cases(),
    }
    for i in all_ids(doc):
        assert is_canonical_uuid7(i), i
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
