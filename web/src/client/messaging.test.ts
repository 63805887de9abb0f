// The messenger's pieces that need no server: the ErrorInfo reason a send is sealed again for,
// and the device state's stored form (every secret survives, nothing else is invented).
import { ConnectError, Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";

import { HistoryKeyRing } from "../crypto/archive";
import { newId } from "../crypto/bytes";
import { DeviceSecrets } from "../crypto/device";
import { DeviceListTracker, DeviceList } from "../crypto/deviceList";
import { IdentityKeyPair } from "../crypto/identity";
import { randomBytes } from "../crypto/primitives";
import { TrustStore } from "../crypto/safety";
import { SessionStore } from "../crypto/sessions";
import { DEVICE_LIST_CHANGED, errorReason } from "./messaging";
import { DeviceState } from "./messagingDevice";
import { EncryptedStore, MemoryBackend } from "./store";

function errorInfo(reason: string): Uint8Array {
  const bytes = new TextEncoder().encode(reason);
  const domain = new TextEncoder().encode("caremesh.messaging");
  return Uint8Array.from([0x0a, bytes.length, ...bytes, 0x12, domain.length, ...domain]);
}

describe("errorReason", () => {
  it("reads google.rpc.ErrorInfo's reason, and nothing from other errors", () => {
    // As connect-web parses grpc-status-details-bin: incoming details with their type name.
    const error = new ConnectError("device lists changed", Code.FailedPrecondition);
    error.details.push({ type: "google.rpc.ErrorInfo", value: errorInfo(DEVICE_LIST_CHANGED) });
    expect(errorReason(error)).toBe(DEVICE_LIST_CHANGED);
    expect(errorReason(new ConnectError("no details", Code.FailedPrecondition))).toBeNull();
    expect(errorReason(new Error("DEVICE_LIST_CHANGED"))).toBeNull();
    const other = new ConnectError("x", Code.Internal);
    other.details.push({ type: "google.rpc.DebugInfo", value: errorInfo("NO") });
    expect(errorReason(other)).toBeNull();
  });
});

describe("DeviceState", () => {
  it("round-trips through the encrypted store with its identity, keys, lists and pending sends", async () => {
    const userId = newId(randomBytes);
    const identity = IdentityKeyPair.generate(newId(randomBytes));
    const secrets = DeviceSecrets.generate();
    secrets.newOneTimePrekeys(identity, userId, 3);
    const lists = new DeviceListTracker();
    lists.observe(new DeviceList(userId, identity.keyId, 1, [secrets.deviceId]));
    const state = new DeviceState(
      userId, identity, secrets, new SessionStore(), HistoryKeyRing.generate(), lists, new TrustStore(),
      true, { key_id: newId(randomBytes), secret: "11".repeat(32) }, true, true,
      new Map([["m", "abcd"]]), ["a notice"], 1234,
    );
    const store = await EncryptedStore.open(new MemoryBackend());
    await state.save(store);
    const loaded = DeviceState.fromJSON((await store.get("device"))!);
    expect(loaded.toJSON()).toEqual(state.toJSON());
    expect(loaded.identity.publish(userId).signature).toEqual(identity.publish(userId).signature);
    expect(loaded.secrets.oneTimeCounts()).toEqual({ x25519: 3, kem: 3 });
    expect(loaded.lists.seenVersion(userId)).toBe(1n);
    expect(() => DeviceState.fromJSON({ ...state.toJSON(), format: 2 as 1 })).toThrow(/format/);
  });
});
