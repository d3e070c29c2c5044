/** docs/playground.md and docs/console.md document every flag of their command (keeps them true as flags change). */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CONSOLE_FLAGS } from '../../src/cli/console.ts';
import { PLAYGROUND_FLAGS } from '../../src/cli/playground.ts';

const doc = (name: string): string => readFileSync(new URL(`../../docs/${name}`, import.meta.url), 'utf8');

describe('docs of the web pages', () => {
  it.each(PLAYGROUND_FLAGS.map((f) => f.name))('docs/playground.md documents --%s', (name) => {
    expect(doc('playground.md')).toMatch(new RegExp(`\`--${name}[ \`]`));
  });
  it.each(CONSOLE_FLAGS.map((f) => f.name))('docs/console.md documents --%s', (name) => {
    expect(doc('console.md')).toMatch(new RegExp(`\`--${name}[ \`]`));
  });
  it('the README links the pages, their screenshots and the observability doc', () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    for (const l of ['docs/playground.md', 'docs/console.md', 'docs/observability.md', 'docs/images/playground.png', 'docs/images/console.png']) expect(readme).toContain(l);
  });
});
