// The admin UI's bundle: Preact components (JSX with Preact's automatic runtime) and
// uPlot, into dist/ with content-hashed asset names (served immutable by src/admin/ui.rs).
import { defineConfig } from 'vite';

export default defineConfig({
  base: '/admin/',
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: process.env.DIGLOT_UI_OUT || 'dist',
    emptyOutDir: true,
    assetsDir: 'assets',
    target: 'es2022',
    sourcemap: false,
    reportCompressedSize: false,
    modulePreload: { polyfill: false },
  },
});
