/**
 * The one error type of the cryptographic layer. `code` is the reason, spelled as the Rust
 * `caremesh_crypto::CryptoError` variant (and as `docs/vectors/protocol-v2.json` names errors);
 * `message` says what is wrong. Messages never contain secret bytes.
 */
export type CryptoErrorCode =
  | "NonContributory"
  | "BadSignature"
  | "MissingKemPrekey"
  | "InvalidKey"
  | "InvalidId"
  | "InvalidDeviceList"
  | "UnknownDevice"
  | "DeviceListRollback"
  | "DeviceListMismatch"
  | "UnknownKey"
  | "NoSession"
  | "DuplicateMessage"
  | "TooManySkipped"
  | "DecryptionFailed"
  | "LinkCodeMismatch"
  | "UnexpectedContent"
  | "MalformedEnvelope"
  | "PlaintextTooLarge"
  | "KeyMismatch"
  | "InvalidStoredKeys"
  | "AttachmentDamaged"
  | "AttachmentDigestMismatch"
  | "Encoding";

export class CryptoError extends Error {
  readonly code: CryptoErrorCode;

  constructor(code: CryptoErrorCode, message: string) {
    super(`${code}: ${message}`);
    this.name = "CryptoError";
    this.code = code;
  }
}

/** Whether `error` is a [`CryptoError`] with the given code. */
export function isCryptoError(error: unknown, code?: CryptoErrorCode): error is CryptoError {
  return error instanceof CryptoError && (code === undefined || error.code === code);
}
