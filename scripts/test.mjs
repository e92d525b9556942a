#!/usr/bin/env node
// Runs every compiled test file with node's test runner. Node 20 expands no globs and
// passes on zero tests when given a folder, so the files are listed here and a run that
// finds none fails. Usage: node scripts/test.mjs [substring filter...]
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const roots = ['packages/protocol/dist/test', 'packages/registry/dist/test', 'packages/client/dist/test'];

function walk(dir, out) {
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

const filters = process.argv.slice(2);
let files = roots.flatMap((r) => walk(join(root, r), []));
if (filters.length > 0) files = files.filter((f) => filters.some((x) => f.includes(x)));
if (files.length === 0) {
  console.error('test: no test files found (did the build run?)');
  process.exit(1);
}
console.log(`test: ${files.length} files\n${files.map((f) => '  ' + relative(root, f)).join('\n')}`);
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=2', '--test-timeout=180000', ...files], { stdio: 'inherit', cwd: root });
process.exit(r.status ?? 1);
