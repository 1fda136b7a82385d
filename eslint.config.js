import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import globals from 'globals';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.tap/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.strict,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-non-null-assertion': 'off',
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  // What a process loads at start-up is paid for in every process (issue 28, fresh RSS): node:http
  // only through lib/util/node-http.ts (an ES import of it loads Node's bundled undici), undici only
  // through lib/util/lazy-undici.ts (loaded on the first connection). Types may be imported.
  {
    files: ['lib/**/*.ts'],
    ignores: ['lib/util/node-http.ts', 'lib/util/lazy-undici.ts', 'lib/cli/doctor.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          paths: [
            { name: 'node:http', message: 'import http from lib/util/node-http.ts (an ES import of node:http loads Node\'s bundled undici).', allowTypeImports: true },
            { name: 'http', message: 'import http from lib/util/node-http.ts (an ES import of node:http loads Node\'s bundled undici).', allowTypeImports: true },
            { name: 'undici', message: 'use lib/util/lazy-undici.ts (undici loads on the first connection).', allowTypeImports: true },
          ],
        },
      ],
    },
  },
  // The dashboard's script runs in the browser as written (no build step).
  { files: ['assets/**/*.js'], languageOptions: { sourceType: 'script', globals: globals.browser } },
);
