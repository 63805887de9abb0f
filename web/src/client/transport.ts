// The one gRPC-Web transport of the app: binary protobuf over HTTPS to the page's own origin. The
// web origin (crates/web) routes each call to its service by protobuf service name, so there is
// no CORS and no other host. The bearer token is added by an interceptor from the in-memory
// session; nothing here stores anything.

import type { Interceptor, Transport } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

/** Returns the current access token, or null when signed out. */
export type TokenSource = () => Promise<string | null>;

export function createTransport(baseUrl: string, token: TokenSource): Transport {
  const bearer: Interceptor = (next) => async (request) => {
    const accessToken = await token();
    if (accessToken !== null && !request.header.has("authorization")) {
      request.header.set("authorization", `Bearer ${accessToken}`);
    }
    return next(request);
  };
  return createGrpcWebTransport({
    baseUrl,
    useBinaryFormat: true,
    interceptors: [bearer],
  });
}
