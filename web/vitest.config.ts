import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    environment: "node",
    include: ["src/**/*.test.ts"],
    // The ML-KEM and ratchet round trips are CPU-bound; a 2-core CI runner needs headroom.
    testTimeout: 60_000,
  },
});
