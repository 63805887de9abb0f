// The app's build: index.html + src/main.tsx → dist/ with hashed assets, the files of public/,
// and a service worker (dist/sw.js) generated here with the exact list of app-shell files.

import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

import { defineConfig, type Plugin } from "vite";

const PUBLIC_DIR = "public";
/** Where `npm run dev` sends gRPC-Web calls: a running `caremesh up`'s web origin. */
const DEV_TARGET = process.env.CAREMESH_WEB_URL ?? "https://localhost:8443";

/** The service worker: caches the app shell at install, serves it cache-first, and leaves every
 *  other request (gRPC-Web POSTs above all) to the network, untouched and never stored. */
function serviceWorker(): Plugin {
  return {
    name: "caremesh-service-worker",
    apply: "build",
    generateBundle(_options, bundle) {
      const publicFiles = readdirSync(PUBLIC_DIR).sort();
      const shell = [
        "/",
        "/index.html",
        ...Object.keys(bundle)
          .filter((name) => !name.endsWith(".map"))
          .map((name) => `/${name}`),
        ...publicFiles.map((name) => `/${name}`),
      ]
        .filter((name, index, all) => all.indexOf(name) === index)
        .sort();
      const version = createHash("sha256");
      for (const name of shell) version.update(name + "\n");
      for (const name of publicFiles) version.update(readFileSync(join(PUBLIC_DIR, name)));
      const source = readFileSync("src/sw/sw.js", "utf8")
        .replace('"__CACHE_NAME__"', JSON.stringify(`caremesh-shell-${version.digest("hex").slice(0, 16)}`))
        .replace('["__SHELL__"]', JSON.stringify(shell));
      this.emitFile({ type: "asset", fileName: "sw.js", source });
    },
  };
}

export default defineConfig({
  root: ".",
  publicDir: PUBLIC_DIR,
  oxc: {
    jsx: { runtime: "automatic", importSource: "preact" },
  },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: false,
    // Everything from this origin, nothing inlined as data: URLs (scripts and styles stay files).
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
  },
  plugins: [serviceWorker()],
  server: {
    // The dev server is a second origin in front of the real one: no CORS of its own.
    cors: false,
    // `npm run dev`: the gRPC-Web calls go to a running `caremesh up` (its web origin), which
    // accepts same-origin calls only, so they arrive with its own origin (the dev server is the
    // developer's own machine; the dev CA's certificate is not checked here).
    proxy: {
      "/caremesh.": {
        target: DEV_TARGET,
        changeOrigin: true,
        secure: false,
        configure: (proxy) => {
          proxy.on("proxyReq", (request) => request.setHeader("origin", new URL(DEV_TARGET).origin));
        },
      },
    },
  },
});
