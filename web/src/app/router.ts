// Hash routing: `#/sign-in`, `#/home`, ... The server's index.html fallback would allow history
// routes too, but the hash keeps every route a single cached app-shell document.

import { useEffect, useState } from "preact/hooks";

export type Route = "register" | "sign-in" | "second-factor" | "mfa" | "home" | "records" | "messages" | "devices" | "admin" | "audit" | "account" | "passkeys";

const ROUTES: readonly Route[] = ["register", "sign-in", "second-factor", "mfa", "home", "records", "messages", "devices", "admin", "audit", "account", "passkeys"];

export function parseRoute(hash: string): Route | null {
  const name = hash.replace(/^#\/?/, "");
  return (ROUTES as readonly string[]).includes(name) ? (name as Route) : null;
}

export function href(route: Route): string {
  return `#/${route}`;
}

export function navigate(route: Route): void {
  if (location.hash !== href(route)) location.hash = href(route);
}

/** The current route (null when the hash names none). */
export function useRoute(): Route | null {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const update = () => setRoute(parseRoute(location.hash));
    window.addEventListener("hashchange", update);
    return () => window.removeEventListener("hashchange", update);
  }, []);
  return route;
}
