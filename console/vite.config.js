// Builds the console into dist/ with fixed file names (no hashes): the engine
// embeds exactly dist/index.html, dist/assets/app.js and dist/assets/app.css
// (src/console.rs), and CI checks that a rebuild matches what is committed.
import { defineConfig } from 'vite';

export default defineConfig({
  base: '/',
  publicDir: false,
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsDir: 'assets',
    cssCodeSplit: false,
    // Everything small enough is inlined; nothing else may be emitted.
    assetsInlineLimit: 100_000,
    modulePreload: { polyfill: false },
    target: 'es2020',
    reportCompressedSize: false,
    rollupOptions: {
      output: {
        entryFileNames: 'assets/app.js',
        chunkFileNames: 'assets/app.js',
        assetFileNames: (asset) => {
          const name = asset.names?.[0] ?? asset.name ?? '';
          if (name.endsWith('.css')) return 'assets/app.css';
          throw new Error(`unexpected asset ${name}: the engine embeds only app.js and app.css`);
        },
        inlineDynamicImports: true,
      },
    },
  },
});
