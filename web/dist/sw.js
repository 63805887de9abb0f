// The caremesh service worker (its template: vite.config.ts fills in the cache name and the list
// of app-shell files at build time, giving dist/sw.js). It caches only the app shell: index.html,
// the hashed assets, the manifest and the icons. It never caches an API response: gRPC-Web calls
// are POSTs, which it does not touch, and any GET that is not a shell file goes to the network
// as if there were no service worker.

const CACHE_NAME = "caremesh-shell-cf361ea2701ce01d";
const SHELL = ["/","/assets/index-Bi7eRqC2.css","/assets/index-Ct85Bl8_.js","/icon-192.png","/icon-512.png","/icon.svg","/index.html","/manifest.webmanifest"];
const SHELL_SET = new Set(SHELL);

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches
      .open(CACHE_NAME)
      .then((cache) => cache.addAll(SHELL))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((names) =>
        Promise.all(
          names.filter((name) => name.startsWith("caremesh-shell-") && name !== CACHE_NAME).map((name) => caches.delete(name)),
        ),
      )
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if (request.mode === "navigate") {
    // The network first (a new version shows at once), the cached shell when offline.
    event.respondWith(fetch(request).catch(() => caches.match("/", { cacheName: CACHE_NAME })));
    return;
  }
  if (SHELL_SET.has(url.pathname)) {
    event.respondWith(
      caches.match(request, { cacheName: CACHE_NAME }).then((cached) => cached || fetch(request)),
    );
  }
});
