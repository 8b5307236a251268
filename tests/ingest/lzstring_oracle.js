// The reference for tests/ingest/test_lzstring.py: npm lz-string 1.5.0 answering JSON lines.
//
// Started once per test session with NODE_PATH pointing at <repo>/.venv/js/node_modules
// (`make js-deps`). Each request is one line of JSON, each answer one line:
//   {"text": s, "repeat": n}      -> {"uint8": hex, "uri": s, "utf16": s}   (compress s.repeat(n))
//   {"uint8": hex} / {"uri": s} / {"utf16": s}
//                                 -> {"result": s | null} or {"error": message}  (decompress)
// Strings travel as JSON: lone surrogates are escaped (\udXXX) both ways, so every
// UTF-16 code unit survives the trip.
"use strict";
const LZString = require("lz-string");
const readline = require("readline");

function answer(req) {
  if (typeof req.text === "string") {
    const text = req.repeat ? req.text.repeat(req.repeat) : req.text;
    return {
      uint8: Buffer.from(LZString.compressToUint8Array(text)).toString("hex"),
      uri: LZString.compressToEncodedURIComponent(text),
      utf16: LZString.compressToUTF16(text),
    };
  }
  try {
    if (typeof req.uint8 === "string") {
      const buf = new Uint8Array(Buffer.from(req.uint8, "hex"));
      return { result: LZString.decompressFromUint8Array(buf) };
    }
    if (typeof req.uri === "string") {
      return { result: LZString.decompressFromEncodedURIComponent(req.uri) };
    }
    if (typeof req.utf16 === "string") {
      return { result: LZString.decompressFromUTF16(req.utf16) };
    }
  } catch (err) {
    return { error: String(err) };
  }
  return { error: "unknown request" };
}

const rl = readline.createInterface({ input: process.stdin, terminal: false });
rl.on("line", (line) => {
  process.stdout.write(JSON.stringify(answer(JSON.parse(line))) + "\n");
});
