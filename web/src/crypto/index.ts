/**
 * caremesh messaging protocol v2 (`docs/protocol.md`) in TypeScript: the same cryptography as
 * the Rust `caremesh_crypto::v2`, checked against the same vectors. Cryptography only: no UI,
 * no transport, no storage (state objects serialize to JSON-compatible plain objects; the app
 * stores them encrypted). Nothing here logs.
 */
export { CryptoError, isCryptoError, type CryptoErrorCode } from "./errors.js";
export { fromHex, toHex, checkUuidV7, newId } from "./bytes.js";
export {
  IdentityKeyPair,
  verifyIdentity,
  sameIdentity,
  identityBindingMessage,
  type IdentityPublicKey,
  type PublishedIdentity,
  type IdentityKeyPairJson,
} from "./identity.js";
export {
  DeviceSecrets,
  deviceKeyMessage,
  signDeviceKey,
  verifyDeviceKey,
  kemCode,
  kemKindFromCode,
  SIGNED_PREKEY,
  KEM_LAST_RESORT,
  KEM_ONE_TIME,
  type DeviceKeyKind,
  type KemKind,
  type PublishedKey,
  type DeviceSecretsJson,
} from "./device.js";
export { DeviceList, DeviceListTracker, MAX_DEVICES, type DeviceListChange, type DeviceListTrackerJson } from "./deviceList.js";
export {
  verifyDeviceBundle,
  initiate,
  respond,
  sessionAd,
  checkPreamble,
  preambleToJSON,
  preambleFromJSON,
  type DeviceBundle,
  type KemPrekeyPublic,
  type VerifiedDeviceBundle,
  type Preamble,
  type PreambleJson,
  type Party,
  type Handshake,
  type InitiateRandomness,
} from "./pqxdh.js";
export {
  Session,
  ListRatchetKeys,
  osRatchetKeys,
  encodeHeader,
  messageAad,
  MAX_SKIP,
  MAX_SKIPPED_KEYS,
  type RatchetKeySource,
  type RatchetHeader,
  type RatchetMessage,
  type SessionPeer,
  type SessionJson,
} from "./ratchet.js";
export { encodeContent, decodeContent, messageContent, checkContentSender, MAX_MESSAGE_BODY_LEN, type Content, type AttachmentRef } from "./content.js";
export {
  AttachmentOpener,
  AttachmentSealer,
  attachmentBlobLen,
  attachmentIdBytes,
  sealFile,
  CHUNK_LEN,
  SEALED_CHUNK_LEN,
  type SealedAttachment,
} from "./attachment.js";
export {
  HistoryKeyRing,
  newHistoryKey,
  sealArchive,
  openArchive,
  type HistoryKey,
  type HistoryKeyRingJson,
  type ArchiveContext,
  type ArchiveCopy,
} from "./archive.js";
export {
  LinkRequest,
  linkMatches,
  findPendingLink,
  sealProvisioning,
  encodeProvisioning,
  encodeLinkCode,
  decodeLinkCode,
  type PendingLink,
  type Provisioning,
  type SealedProvisioning,
} from "./link.js";
