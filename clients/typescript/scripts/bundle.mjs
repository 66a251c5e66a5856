// Builds dist/signalbox.browser.js: the client as one minified ES module for
// browsers, @msgpack/msgpack included, and prints its size minified and
// gzipped. `--check` compares with the committed file instead of writing it.

import { build } from "esbuild";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const outfile = path.join(root, "dist", "signalbox.browser.js");

/** The notice of the bundled @msgpack/msgpack (ISC: it travels with every copy). */
function msgpackNotice() {
  const license = readFileSync(path.join(root, "node_modules", "@msgpack", "msgpack", "LICENSE"), "utf8");
  return `/*! @signalbox/client browser bundle. It includes @msgpack/msgpack, under this license:\n\n${license.trim().replaceAll("*/", "* /")}\n*/`;
}

/** The bundle's text, built from the sources. */
export async function bundle() {
  const result = await build({
    banner: { js: msgpackNotice() },
    entryPoints: [path.join(root, "src", "index.ts")],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    minify: true,
    legalComments: "eof",
    write: false,
    logLevel: "silent",
  });
  return result.outputFiles[0].text;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const text = await bundle();
  if (process.argv.includes("--check")) {
    const committed = readFileSync(outfile, "utf8");
    if (committed !== text) {
      console.error(`${outfile} differs from its sources: run npm run bundle`);
      process.exit(1);
    }
  } else {
    writeFileSync(outfile, text);
  }
  const bytes = Buffer.byteLength(text);
  console.log(`signalbox.browser.js: ${bytes} bytes minified, ${gzipSync(text, { level: 9 }).length} bytes gzipped`);
}
