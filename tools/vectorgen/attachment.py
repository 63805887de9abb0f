#!/usr/bin/env python3
"""Known-answer tests for caremesh attachments (docs/protocol.md §13), written from the protocol
document alone with `cryptography` (HKDF-SHA256, AES-256-GCM) and hashlib:

    python3 -m pip install -r tools/vectorgen/requirements.txt
    python3 tools/vectorgen/attachment.py > docs/vectors/attachment-v1.json

Deterministic: keys and ids are SHA-256("caremesh-vectors/attachment/" + name); file bytes are
i mod 251. Cases larger than 2 KiB carry the blob's digest and its first and last 64 bytes only.
"""

import hashlib
import json

import cryptography
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

LABEL = b"caremesh-attachment-v1"
CHUNK_LEN = 65536
INLINE_LIMIT = 2048


def derive(name: str, length: int = 32) -> bytes:
    return hashlib.sha256(("caremesh-vectors/attachment/" + name).encode()).digest()[:length]


def file_bytes(length: int) -> bytes:
    return bytes(i % 251 for i in range(length))


def chunk_key(key: bytes, attachment_id: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=attachment_id, info=LABEL).derive(key)


def nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(8, "big") + b"\x00\x00\x00" + (b"\x01" if last else b"\x00")


def aad(attachment_id: bytes, index: int, last: bool) -> bytes:
    return LABEL + attachment_id + index.to_bytes(8, "big") + (b"\x01" if last else b"\x00")


def seal(key: bytes, attachment_id: bytes, plaintext: bytes) -> bytes:
    aead = AESGCM(chunk_key(key, attachment_id))
    chunks = [plaintext[i : i + CHUNK_LEN] for i in range(0, len(plaintext), CHUNK_LEN)] or [b""]
    blob = b""
    for index, chunk in enumerate(chunks):
        last = index == len(chunks) - 1
        blob += aead.encrypt(nonce(index, last), chunk, aad(attachment_id, index, last))
    return blob


def case(name: str, length: int) -> dict:
    key = derive(name + "/key")
    attachment_id = derive(name + "/id", 16)
    # A UUIDv7 layout (version 7, RFC 9562 variant), as the services issue.
    attachment_id = attachment_id[:6] + bytes([0x70 | (attachment_id[6] & 0x0F)]) + attachment_id[7:8] + \
        bytes([0x80 | (attachment_id[8] & 0x3F)]) + attachment_id[9:]
    plaintext = file_bytes(length)
    blob = seal(key, attachment_id, plaintext)
    out = {
        "name": name,
        "key": key.hex(),
        "attachment_id": attachment_id.hex(),
        "chunk_key": chunk_key(key, attachment_id).hex(),
        "plaintext_len": length,
        "blob_len": len(blob),
        "digest": hashlib.sha256(blob).hexdigest(),
    }
    if len(blob) <= INLINE_LIMIT:
        out["blob"] = blob.hex()
    else:
        out["blob_head"] = blob[:64].hex()
        out["blob_tail"] = blob[-64:].hex()
    return out


def main() -> None:
    cases = [
        case("empty", 0),
        case("one byte", 1),
        case("short", 1000),
        case("one full chunk", CHUNK_LEN),
        case("one chunk and a byte", CHUNK_LEN + 1),
        case("three chunks and a tail", 3 * CHUNK_LEN + 4321),
    ]
    print(json.dumps({
        "format": "caremesh-attachment-v1",
        "generator": f"tools/vectorgen/attachment.py (cryptography {cryptography.__version__})",
        "chunk_len": CHUNK_LEN,
        "file_bytes": "byte i of a file is i mod 251",
        "cases": cases,
    }, indent=2))


if __name__ == "__main__":
    main()
