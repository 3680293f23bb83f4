import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['**/node_modules/**', '**/dist/**', '**/out/**', '.cache/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-floating-promises': 'error',
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  {
    files: ['**/*.js', '**/*.cjs', '**/*.mjs'],
    extends: [tseslint.configs.disableTypeChecked],
  },
  {
    // In CI a skipped test must fail unless its reason is allow-listed: only skipLoudly knows.
    files: ['packages/*/test/**/*.ts', 'apps/*/test/**/*.ts', 'test/**/*.ts'],
    ignores: ['packages/test-support/**'],
    rules: {
      'no-restricted-syntax': [
        'error',
        ...['skip', 'todo'].flatMap((name) => [
          {
            selector: `CallExpression[callee.property.name='${name}']`,
            message: `No ${name}(): skip through skipLoudly (@gatehouse/test-support).`,
          },
          {
            selector: `CallExpression > ObjectExpression > Property[key.name='${name}']`,
            message: `No { ${name} } test option: skip through skipLoudly (@gatehouse/test-support).`,
          },
        ]),
      ],
    },
  },
);
