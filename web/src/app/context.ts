// The app's client, given to every screen through context (so tests or a future shell can pass
// another one).

import { createContext } from "preact";
import { useContext } from "preact/hooks";

import type { CaremeshClient } from "../client";

export const ClientContext = createContext<CaremeshClient | null>(null);

export function useClient(): CaremeshClient {
  const client = useContext(ClientContext);
  if (client === null) throw new Error("no CaremeshClient in context");
  return client;
}
