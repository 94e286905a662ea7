#!/usr/bin/env node
// Makes the npm `solc` (WASM soljson, pinned in package.json) look like a native solc binary to
// py-solc-x: `--version` prints solc's version line, `--standard-json` reads the JSON input on stdin
// and prints ONLY the JSON output (solcjs's own CLI prints a banner line first, which breaks
// py-solc-x). Imports resolve `@openzeppelin/...` (and any other npm package) from node_modules and
// everything else from contracts/. Written by hand because no package does this translation.
'use strict';
const fs = require('fs');
const path = require('path');

const ROOT = path.resolve(__dirname, '..');
const solc = require(path.join(ROOT, 'node_modules', 'solc'));

function findImports(importPath) {
  const candidates = [];
  if (importPath.startsWith('@') || importPath.startsWith('node_modules/')) {
    candidates.push(path.join(ROOT, 'node_modules', importPath.replace(/^node_modules\//, '')));
  }
  candidates.push(path.join(ROOT, 'contracts', importPath.replace(/^contracts\//, '')));
  candidates.push(path.join(ROOT, importPath));
  for (const p of candidates) {
    // never resolve outside the project (a source could otherwise read any file)
    if (!path.resolve(p).startsWith(ROOT + path.sep)) continue;
    if (fs.existsSync(p) && fs.statSync(p).isFile()) {
      return { contents: fs.readFileSync(p, 'utf8') };
    }
  }
  return { error: `File not found: ${importPath}` };
}

const args = process.argv.slice(2);
if (args.includes('--version')) {
  process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`);
  process.exit(0);
}
if (args.includes('--standard-json')) {
  const chunks = [];
  process.stdin.on('data', (c) => chunks.push(c));
  process.stdin.on('end', () => {
    const input = Buffer.concat(chunks).toString('utf8');
    const output = solc.compile(input, { import: findImports });
    process.stdout.write(output);
    process.stdout.write('\n');
  });
} else {
  process.stderr.write('usage: solc_shim.js --version | --standard-json < input.json\n');
  process.exit(2);
}
