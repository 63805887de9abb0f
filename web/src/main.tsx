// The entry point: the app in #app, and the service worker that caches the app shell.

import { render } from "preact";

import { App } from "./app/App";
import "./app/styles.css";
import { createCaremeshClient } from "./client";

const root = document.getElementById("app");
if (root) render(<App client={createCaremeshClient()} />, root);

if ("serviceWorker" in navigator && import.meta.env.PROD) {
  window.addEventListener("load", () => {
    navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch(() => undefined);
  });
}
