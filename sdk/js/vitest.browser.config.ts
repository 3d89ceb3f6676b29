import { defineConfig } from "vitest/config";

// Browser tests: Debian's Chromium through playwright-core, one file at a time.
export default defineConfig({
  test: {
    include: ["test/browser/**/*.test.ts"],
    globalSetup: ["test/browser/setup.ts"],
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 180_000,
  },
});
