// Builds the dashboard into dist/, served by the agent at /ui/ (packages/registry/src/api/ui.ts).
// `npx vite` in this folder serves it with hot reload against an agent on 127.0.0.1:7700.
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

export default defineConfig({
  base: '/ui/',
  plugins: [react()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    // Two small files (code, styles) beat a waterfall of chunks on a slow link.
    chunkSizeWarningLimit: 300,
  },
  server: {
    proxy: { '/v1': { target: 'http://127.0.0.1:7700', changeOrigin: false } },
  },
});
