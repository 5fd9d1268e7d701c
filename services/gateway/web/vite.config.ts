import { defineConfig } from "vitest/config";

// The build lands where the gateway serves it: services/gateway/static/app/.
// `npm run dev` proxies the API to a gateway on :8000 (or VERTAC_GATEWAY_URL).
const gateway = process.env.VERTAC_GATEWAY_URL ?? "http://127.0.0.1:8000";

export default defineConfig({
  base: "/",
  build: {
    outDir: "../static/app",
    emptyOutDir: true,
    target: "es2022",
    chunkSizeWarningLimit: 600,
  },
  server: {
    proxy: {
      "/api": { target: gateway, ws: true },
    },
  },
  test: {
    include: ["test/**/*.test.ts"],
    environment: "node",
  },
});
